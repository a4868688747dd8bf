//! Creates with an `Idempotency-Key`.

use serde_json::{Value, json};

use crate::app::{App, within};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_idempotency_key_returns_the_first_result_and_one_row() {
    within(async {
        let app = App::start().await;
        let keyed = |key: &str, name: &str| {
            app.request(reqwest::Method::POST, "/api/servers")
                .header("Idempotency-Key", key)
                .json(&json!({ "name": name, "url": "http://a" }))
        };

        let first = app.send(keyed("req-1", "alpha")).await;
        assert_eq!(first.status, 201, "{first:?}");
        let retry = app.send(keyed("req-1", "alpha")).await;
        assert_eq!(retry.status, 201, "a client retry succeeds: {retry:?}");
        assert_eq!(retry.body, first.body, "and returns the first result");

        // Without the key the same body is a second create, refused on the name.
        app.send(keyed("req-2", "alpha"))
            .await
            .assert_error(409, "conflict");

        assert_eq!(
            app.scalar("SELECT count(*) FROM servers").await,
            1,
            "only one row"
        );
        assert_eq!(
            app.server.db().metrics().stored_results_returned,
            1,
            "the retry was answered from the stored result"
        );

        app.send(
            app.request(reqwest::Method::POST, "/api/servers")
                .header("Idempotency-Key", "")
                .json(&json!({ "name": "beta", "url": "http://b" })),
        )
        .await
        .assert_error(400, "invalid_request");
        app.finish().await;
    })
    .await;
}

/// A key stands for one request: sent again with another body it is refused with 422
/// `idempotency_key_reused` (nothing is created); with the same body it still gets the
/// first answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_idempotency_key_with_another_body_is_422_idempotency_key_reused() {
    within(async {
        let app = App::start().await;
        let keyed = |key: &str, body: Value| {
            app.request(reqwest::Method::POST, "/api/servers")
                .header("Idempotency-Key", key)
                .json(&body)
        };

        let first = app
            .send(keyed(
                "req-1",
                json!({ "name": "alpha", "url": "http://a" }),
            ))
            .await;
        assert_eq!(first.status, 201, "{first:?}");
        let other = app
            .send(keyed(
                "req-1",
                json!({ "name": "alpha", "url": "http://b" }),
            ))
            .await;
        other.assert_error(422, "idempotency_key_reused");
        assert_eq!(other.body["error"]["retryable"], json!(false), "{other:?}");
        assert_eq!(other.retry_after(), None, "not to be retried as it is");
        let same = app
            .send(keyed(
                "req-1",
                json!({ "name": "alpha", "url": "http://a" }),
            ))
            .await;
        assert_eq!(same.status, 201, "{same:?}");
        assert_eq!(same.body, first.body, "the first answer");
        assert_eq!(
            app.scalar("SELECT count(*) FROM servers").await,
            1,
            "only the first request created anything"
        );
        app.finish().await;
    })
    .await;
}
