//! Every class of bad token is refused with 401 before the upgrade; good
//! tokens from each key source are accepted.

mod common;

use common::*;
use jsonwebtoken::Algorithm;
use serde_json::json;

fn rsa() -> Vec<u8> {
    std::fs::read(fixture("rsa_private.pem")).unwrap()
}

fn claims(aud: &str, exp_offset: i64) -> serde_json::Value {
    json!({"sub": "alice", "aud": aud, "exp": (now_secs() as i64 + exp_offset)})
}

async fn expect_refused(node: &Node, token: &str, reason: &str) {
    let (status, body) = refused(&node.ws_url(token)).await;
    assert_eq!(status, 401, "token for {reason}: {body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["reason"], reason, "{body}");
}

#[tokio::test]
async fn jwks_uri_every_failure_class_is_401() {
    let jwks = std::fs::read_to_string(fixture("jwks.json")).unwrap();
    let jwks_addr = serve_file(jwks, "public, max-age=600");
    let uri = format!("http://{jwks_addr}/jwks.json");
    let node = Node::start(
        &[
            "--jwks-uri",
            &uri,
            "--jwt-audiences",
            "app,other-app",
            "--api-key",
            "k",
        ],
        "k",
    );
    let good = sign(Algorithm::RS256, &rsa(), Some("k1"), claims("app", 60));
    let (status, _) = refused(&node.ws_url(&good)).await;
    assert_eq!(status, 101);
    // Bearer header instead of the query parameter, and a bare header.
    for value in [format!("Bearer {good}"), good.clone()] {
        let mut req =
            tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
                format!("ws://{}/push", node.addr),
            )
            .unwrap();
        req.headers_mut()
            .insert("authorization", value.parse().unwrap());
        assert!(tokio_tungstenite::connect_async(req).await.is_ok());
    }

    let (status, body) = refused(&format!("ws://{}/push", node.addr)).await;
    assert_eq!(status, 401);
    assert!(body.contains("missing_token"), "{body}");
    expect_refused(&node, "not-a-jwt", "malformed_token").await;
    expect_refused(&node, "a.b.c", "malformed_token").await;
    let other = std::fs::read(fixture("rsa_other_private.pem")).unwrap();
    let forged = sign(Algorithm::RS256, &other, Some("k1"), claims("app", 60));
    expect_refused(&node, &forged, "bad_signature").await;
    let unknown = sign(Algorithm::RS256, &rsa(), Some("nope"), claims("app", 60));
    expect_refused(&node, &unknown, "unknown_kid").await;
    let expired = sign(Algorithm::RS256, &rsa(), Some("k1"), claims("app", -120));
    expect_refused(&node, &expired, "expired").await;
    let wrong_aud = sign(Algorithm::RS256, &rsa(), Some("k1"), claims("evil", 60));
    expect_refused(&node, &wrong_aud, "wrong_audience").await;
    // alg none: header {"alg":"none","kid":"k1"}, no signature.
    let none = format!(
        "eyJhbGciOiJub25lIiwia2lkIjoiazEifQ.{}.",
        "eyJzdWIiOiJhbGljZSIsImF1ZCI6ImFwcCJ9"
    );
    expect_refused(&node, &none, "alg_not_allowed").await;
    // HS256 "signed" with the public key material, against the RS256 key.
    let public = std::fs::read(fixture("rsa_public.pem")).unwrap();
    let confused = sign(Algorithm::HS256, &public, Some("k1"), claims("app", 60));
    expect_refused(&node, &confused, "alg_not_allowed").await;

    let metrics = node.metrics().await;
    for reason in [
        "missing_token",
        "bad_signature",
        "expired",
        "alg_not_allowed",
    ] {
        assert!(
            metrics.contains(&format!("sumu_auth_failures_total{{reason=\"{reason}\"}}")),
            "no metric for {reason}"
        );
    }
}

#[tokio::test]
async fn firebase_x509_uri_and_client_id_audience() {
    let map = std::fs::read_to_string(fixture("firebase_x509.json")).unwrap();
    let addr = serve_file(map, "public, max-age=19000, must-revalidate");
    let uri = format!("http://{addr}/x509");
    let node = Node::start(&["--jwks-uri", &uri, "--jwt-audiences", "app"], "");
    let token = sign(
        Algorithm::RS256,
        &rsa(),
        Some("k1"),
        json!({"sub": "bob", "client_id": "app", "exp": now_secs() + 60}),
    );
    let (status, _) = refused(&node.ws_url(&token)).await;
    assert_eq!(status, 101);
    let other = sign(Algorithm::RS256, &rsa(), Some("k2"), claims("app", 60));
    expect_refused(&node, &other, "unknown_kid").await;
}

#[tokio::test]
async fn local_pem_file_and_hs256_secret_and_switchable_expiry() {
    let node = Node::start(
        &[
            "--jwks-file",
            &fixture("ec_public.pem"),
            "--hs256-secret",
            "s3cret",
            "--verify-token-expiration=false",
        ],
        "",
    );
    let ec = std::fs::read(fixture("ec_private.pem")).unwrap();
    let es = sign(
        Algorithm::ES256,
        &ec,
        None,
        json!({"sub": "carol", "exp": now_secs() - 3600}),
    );
    assert_eq!(
        refused(&node.ws_url(&es)).await.0,
        101,
        "expired accepted when switched off"
    );
    let hs = sign(Algorithm::HS256, b"s3cret", None, json!({"sub": "dave"}));
    assert_eq!(refused(&node.ws_url(&hs)).await.0, 101);
    let bad = sign(Algorithm::HS256, b"wrong", None, json!({"sub": "dave"}));
    expect_refused(&node, &bad, "bad_signature").await;
    // No configured key is an RSA key.
    let rs = sign(Algorithm::RS256, &rsa(), None, json!({"sub": "eve"}));
    expect_refused(&node, &rs, "alg_not_allowed").await;
}

#[tokio::test]
async fn jwks_file_with_kids() {
    let node = Node::start(
        &[
            "--jwks-file",
            &fixture("jwks.json"),
            "--jwt-issuer",
            "https://issuer.example",
        ],
        "",
    );
    let ok = sign(
        Algorithm::RS256,
        &rsa(),
        Some("k1"),
        json!({"sub": "a", "iss": "https://issuer.example", "exp": now_secs() + 60}),
    );
    assert_eq!(refused(&node.ws_url(&ok)).await.0, 101);
    let wrong_iss = sign(
        Algorithm::RS256,
        &rsa(),
        Some("k1"),
        json!({"sub": "a", "iss": "https://evil.example", "exp": now_secs() + 60}),
    );
    expect_refused(&node, &wrong_iss, "wrong_issuer").await;
}
