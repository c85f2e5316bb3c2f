//! A WebSocket client for tests (tokio-tungstenite): read the next text
//! frame or the close code within a deadline, send text, and read why an
//! upgrade was refused.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Next text frame within `within`, skipping pings/pongs.
pub async fn next_text(ws: &mut Ws, within: Duration) -> Option<String> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let msg = tokio::time::timeout_at(deadline, ws.next()).await.ok()??;
        match msg {
            Ok(Message::Text(t)) => return Some(t.to_string()),
            Ok(Message::Ping(_)) | Ok(Message::Pong(_)) => continue,
            _ => return None,
        }
    }
}

/// Waits for the close frame; returns its code (None: closed without one, or timeout).
pub async fn close_code(ws: &mut Ws, within: Duration) -> Option<u16> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Ok(Some(Ok(Message::Close(Some(CloseFrame { code, .. }))))) => {
                return Some(u16::from(code))
            }
            Ok(Some(Ok(Message::Close(None)))) | Ok(None) | Ok(Some(Err(_))) => return None,
            Ok(Some(Ok(_))) => continue,
            Err(_) => return None,
        }
    }
}

pub async fn send_text(ws: &mut Ws, text: &str) {
    ws.send(Message::text(text.to_string()))
        .await
        .expect("send");
}

/// Sends `text` as one message in fragments of at most `chunk` bytes (a
/// message larger than the node's frame limit, within its message limit).
pub async fn send_fragmented(ws: &mut Ws, text: &str, chunk: usize) {
    use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
    use tokio_tungstenite::tungstenite::protocol::frame::{Frame, FrameHeader};
    let parts: Vec<&[u8]> = text.as_bytes().chunks(chunk.max(1)).collect();
    for (i, part) in parts.iter().enumerate() {
        let header = FrameHeader {
            is_final: i + 1 == parts.len(),
            opcode: OpCode::Data(if i == 0 { Data::Text } else { Data::Continue }),
            ..FrameHeader::default()
        };
        ws.send(Message::Frame(Frame::from_payload(
            header,
            part.to_vec().into(),
        )))
        .await
        .expect("send a fragment");
    }
}

/// The HTTP status of a refused upgrade and its JSON body (101 if it was
/// accepted).
pub async fn refused(url: &str) -> (u16, String) {
    match tokio_tungstenite::connect_async(url).await {
        Ok(_) => (101, String::new()),
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            let body = resp
                .body()
                .as_ref()
                .map(|b| String::from_utf8_lossy(b).to_string())
                .unwrap_or_default();
            (resp.status().as_u16(), body)
        }
        Err(e) => panic!("unexpected error {e}"),
    }
}
