//! The client address behind a real HAProxy with `send-proxy-v2`, for the
//! address limits (issue 12, item 12). The other limits are tested in
//! process (`fast::limits`), whose PROXY helpers this uses.

use std::net::SocketAddr;

use crate::fast::limits::{proxied_node, status_of, upgrade_request};
use sumu_testkit::proxy::Haproxy;
use tokio::net::TcpSocket;

#[tokio::test]
async fn haproxy_send_proxy_v2_passes_the_client_address() {
    let node = proxied_node();
    let haproxy = Haproxy::send_proxy_v2(node.addr);
    // Clients on 127.0.0.2 and 127.0.0.3: HAProxy connects to the node from
    // 127.0.0.1 for both, so only the header tells them apart.
    let front = haproxy.addr;
    let from = |ip: [u8; 4]| async move {
        let socket = TcpSocket::new_v4().unwrap();
        socket.bind(SocketAddr::from((ip, 0))).unwrap();
        socket.connect(front).await.unwrap()
    };
    let mut a = from([127, 0, 0, 2]).await;
    assert_eq!(
        status_of(&mut a, &upgrade_request(haproxy.addr, "a")).await,
        Some(101)
    );
    let mut b = from([127, 0, 0, 3]).await;
    assert_eq!(
        status_of(&mut b, &upgrade_request(haproxy.addr, "b")).await,
        Some(101)
    );
    let mut c = from([127, 0, 0, 2]).await;
    assert_eq!(
        status_of(&mut c, &upgrade_request(haproxy.addr, "c")).await,
        Some(429),
        "127.0.0.2 holds its one socket"
    );
}
