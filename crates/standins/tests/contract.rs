//! The stand-ins' own contract, spoken in raw HTTP/1.1 so no client library hides anything.

use lastmile_core::Platform;
use lastmile_standins::{Fault, StandIn, ACCESS_TOKEN};
use std::net::SocketAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn raw(addr: SocketAddr, request: &str) -> std::io::Result<String> {
    let mut stream = TcpStream::connect(addr).await?;
    stream.write_all(request.as_bytes()).await?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await?;
    Ok(String::from_utf8_lossy(&answer).into_owned())
}

fn get(path: &str, headers: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: standin\r\nConnection: close\r\n{headers}\r\n")
}

#[tokio::test]
async fn down_answers_nothing_and_can_be_switched_off_on_the_same_port() {
    let s = StandIn::start(Platform::Woocommerce).await;
    let request = get("/wp-json/wc/v3/orders/1", "");
    s.set_fault(Fault::Down);
    let answer = raw(s.addr(), &request).await;
    assert!(answer.as_deref().map_or(true, str::is_empty), "expected no answer while down: {answer:?}");
    assert!(s.requests().is_empty(), "a refused connection is not a received request");

    s.set_fault(Fault::None);
    let answer = raw(s.addr(), &request).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    assert_eq!(s.requests().len(), 1);
}

#[tokio::test]
async fn counted_faults_expire() {
    let s = StandIn::start(Platform::Bigcommerce).await;
    s.seed_order("1", "11");
    s.set_fault_times(Fault::Status5xx(503), 2);
    let path = format!("/stores/{}/v2/orders/1", lastmile_standins::BIGCOMMERCE_STORE_HASH);
    let headers = format!("X-Auth-Token: {ACCESS_TOKEN}\r\nAccept: application/json\r\n");
    for expected in ["HTTP/1.1 503", "HTTP/1.1 503", "HTTP/1.1 200"] {
        let answer = raw(s.addr(), &get(&path, &headers)).await.unwrap();
        assert!(answer.starts_with(expected), "wanted {expected}: {answer}");
    }
    assert_eq!(s.fault(), Fault::None);
}

#[tokio::test]
async fn bigcommerce_checks_token_accept_and_store_hash() {
    let s = StandIn::start(Platform::Bigcommerce).await;
    s.seed_order("1", "11");
    let path = format!("/stores/{}/v2/orders/1", lastmile_standins::BIGCOMMERCE_STORE_HASH);
    let cases = [
        (path.clone(), String::new(), "HTTP/1.1 401"),
        (path.clone(), "X-Auth-Token: wrong\r\nAccept: application/json\r\n".to_owned(), "HTTP/1.1 401"),
        (path.clone(), format!("X-Auth-Token: {ACCESS_TOKEN}\r\n"), "HTTP/1.1 406"),
        (
            "/stores/otherhash/v2/orders/1".to_owned(),
            format!("X-Auth-Token: {ACCESS_TOKEN}\r\nAccept: application/json\r\n"),
            "HTTP/1.1 404",
        ),
        (path, format!("X-Auth-Token: {ACCESS_TOKEN}\r\nAccept: application/json\r\n"), "HTTP/1.1 200"),
    ];
    for (path, headers, expected) in cases {
        let answer = raw(s.addr(), &get(&path, &headers)).await.unwrap();
        assert!(answer.starts_with(expected), "{path} {headers:?}: wanted {expected}: {answer}");
    }
}

#[tokio::test]
async fn shopify_rejects_unknown_input_fields_and_the_old_mutation() {
    let s = StandIn::start(Platform::Shopify).await;
    s.seed_order("1", "OPEN");
    let post = |body: &str| {
        format!(
            "POST /admin/api/2025-01/graphql.json HTTP/1.1\r\nHost: standin\r\nConnection: close\r\n\
             X-Shopify-Access-Token: {ACCESS_TOKEN}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        )
    };
    let unknown_field = r#"{"query":"mutation m($fulfillment: FulfillmentInput!) { fulfillmentCreate(fulfillment: $fulfillment) { userErrors { message } } }","variables":{"fulfillment":{"lineItemsByFulfillmentOrder":[{"fulfillmentOrderId":"gid://shopify/FulfillmentOrder/1000001"}],"bogus":1}}}"#;
    let answer = raw(s.addr(), &post(unknown_field)).await.unwrap();
    assert!(answer.contains("INVALID_VARIABLE"), "{answer}");
    let old = r#"{"query":"mutation m($f: FulfillmentV2Input!) { fulfillmentCreateV2(fulfillment: $f) { userErrors { message } } }"}"#;
    let answer = raw(s.addr(), &post(old)).await.unwrap();
    assert!(answer.contains("doesn't exist"), "{answer}");
    assert_eq!(s.fulfilment_count("1"), 0);
}
