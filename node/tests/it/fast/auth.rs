//! Every class of bad token is refused with 401 before the upgrade; good
//! tokens from each key source are accepted.

use crate::common::*;
use jsonwebtoken::Algorithm;
use serde_json::json;

fn rsa() -> Vec<u8> {
    std::fs::read(fixture("rsa_private.pem")).unwrap()
}

fn claims(aud: &str, exp_offset: i64) -> serde_json::Value {
    json!({"sub": "alice", "aud": aud, "exp": (now_secs() as i64 + exp_offset)})
}

async fn expect_refused(node: &NodeClient, token: &str, reason: &str) {
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
    let node = InProcessNode::start(
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
    let node = InProcessNode::start(&["--jwks-uri", &uri, "--jwt-audiences", "app"], "");
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
    let node = InProcessNode::start(
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
    let node = InProcessNode::start(
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

/// Issue 12 item 2: with `--jwt-issuer`, a token without `iss` is refused.
#[tokio::test]
async fn required_issuer_must_be_present() {
    let node = InProcessNode::start(
        &[
            "--jwks-file",
            &fixture("jwks.json"),
            "--jwt-issuer",
            "https://issuer.example",
        ],
        "",
    );
    let no_iss = sign(
        Algorithm::RS256,
        &rsa(),
        Some("k1"),
        json!({"sub": "a", "exp": now_secs() + 60}),
    );
    expect_refused(&node, &no_iss, "missing_claim").await;
}

/// Issue 12 item 7: a `sub` that cannot be a user id (too long, control
/// characters) is refused at the door with its own reason.
#[tokio::test]
async fn unusable_subjects_are_refused() {
    let node = InProcessNode::start(&["--hs256-secret", "s3cret"], "");
    let token = |sub: String| {
        sign(
            Algorithm::HS256,
            b"s3cret",
            None,
            json!({"sub": sub, "exp": now_secs() + 60}),
        )
    };
    assert_eq!(refused(&node.ws_url(&token("a".repeat(256)))).await.0, 101);
    let long = format!("{}\u{1}\n", "x".repeat(10 * 1024));
    expect_refused(&node, &token(long), "invalid_subject").await;
    expect_refused(&node, &token("a".repeat(257)), "invalid_subject").await;
    expect_refused(&node, &token("bob\r\nX-Admin: 1".into()), "invalid_subject").await;
}

/// Issue 12 item 8: a token in the header and another in the query: the
/// header wins, as in SUMU's authorizer.
#[tokio::test]
async fn header_token_wins_over_query_token() {
    let node = InProcessNode::start(&["--hs256-secret", "s3cret", "--api-key", "k"], "k");
    let token = |sub: &str| {
        sign(
            Algorithm::HS256,
            b"s3cret",
            None,
            json!({"sub": sub, "exp": now_secs() + 60}),
        )
    };
    let mut req = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
        node.ws_url(&token("mallory")),
    )
    .unwrap();
    req.headers_mut().insert(
        "authorization",
        format!("Bearer {}", token("alice")).parse().unwrap(),
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    let (status, _) = node
        .notify(r#"{"users":["alice"],"data":{"to":"alice"}}"#)
        .await;
    assert_eq!(status, 202);
    assert_eq!(
        next_text(&mut ws, std::time::Duration::from_secs(5))
            .await
            .as_deref(),
        Some(r#"{"to":"alice"}"#)
    );
}

/// Issue 12 item 8: two `?authorization=` parameters get a reason of their own.
#[tokio::test]
async fn two_query_tokens_are_refused_as_duplicate() {
    let node = InProcessNode::start(&["--hs256-secret", "s3cret"], "");
    let t = sign(
        Algorithm::HS256,
        b"s3cret",
        None,
        json!({"sub": "a", "exp": now_secs() + 60}),
    );
    let url = format!(
        "ws://{}/push?authorization={t}&authorization={t}",
        node.addr
    );
    let (status, body) = refused(&url).await;
    assert_eq!(status, 401, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["reason"], "duplicate_token", "{body}");
}

/// Issue 12 item 16: a JWKS served with `max-age=0` is still cached for the
/// documented floor (60 s): 200 handshakes cost at most a couple of fetches.
#[tokio::test]
async fn jwks_max_age_zero_does_not_fetch_per_handshake() {
    let jwks = std::fs::read_to_string(fixture("jwks.json")).unwrap();
    let (jwks_addr, fetches) = serve_file_counted(jwks, "max-age=0");
    let uri = format!("http://{jwks_addr}/jwks.json");
    let node = InProcessNode::start(&["--jwks-uri", &uri], "");
    let good = sign(
        Algorithm::RS256,
        &rsa(),
        Some("k1"),
        json!({"sub": "a", "exp": now_secs() + 60}),
    );
    for _ in 0..200 {
        assert_eq!(refused(&node.ws_url(&good)).await.0, 101);
    }
    let n = fetches.load(std::sync::atomic::Ordering::SeqCst);
    assert!(n <= 2, "{n} JWKS fetches for 200 handshakes");
}

/// Issue 17 item 9: a JWKS response with a `max-age` far beyond any sane
/// lifetime (here u64::MAX seconds) is cached for a bounded time; it used to
/// overflow the expiry instant and panic the fetch (the node died at start).
#[tokio::test]
async fn jwks_with_a_huge_max_age_is_served_not_a_panic() {
    let jwks = std::fs::read_to_string(fixture("jwks.json")).unwrap();
    let addr = serve_file(jwks, "public, max-age=18446744073709551615");
    let uri = format!("http://{addr}/jwks.json");
    let node = InProcessNode::start(&["--jwks-uri", &uri], "");
    let good = sign(
        Algorithm::RS256,
        &rsa(),
        Some("k1"),
        json!({"sub": "a", "exp": now_secs() + 60}),
    );
    assert_eq!(refused(&node.ws_url(&good)).await.0, 101);
    assert_eq!(refused(&node.ws_url(&good)).await.0, 101);
}

/// Issue 17 item 9: the body of a JWKS response is read up to a limit
/// (1 MiB), not to its end: a valid key set padded to 2 MiB is refused
/// (the node has no keys: 503 `keys_unavailable`), it was accepted before.
#[tokio::test]
async fn an_oversized_jwks_body_is_refused() {
    let jwks = std::fs::read_to_string(fixture("jwks.json")).unwrap();
    let padded = jwks.replacen('{', &format!("{{{}", " ".repeat(2 << 20)), 1);
    assert!(serde_json::from_str::<serde_json::Value>(&padded).is_ok());
    let addr = serve_file(padded, "max-age=600");
    let uri = format!("http://{addr}/jwks.json");
    let node = InProcessNode::start(&["--jwks-uri", &uri], "");
    let good = sign(
        Algorithm::RS256,
        &rsa(),
        Some("k1"),
        json!({"sub": "a", "exp": now_secs() + 60}),
    );
    let (status, body) = refused(&node.ws_url(&good)).await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("keys_unavailable"), "{body}");
}
