//! The bearer token: every route but the health probes needs it.

use serde_json::json;

use crate::app::{App, TOKEN, within};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_without_or_with_a_wrong_token_get_401() {
    within(async {
        let app = App::start().await;

        let anonymous = app.send(app.http.get(app.url("/api/servers"))).await;
        anonymous.assert_error(401, "unauthorized");
        assert_eq!(anonymous.body["error"]["retryable"], false);
        assert_eq!(
            anonymous
                .headers
                .get(reqwest::header::WWW_AUTHENTICATE)
                .and_then(|v| v.to_str().ok()),
            Some("Bearer")
        );

        let wrong = app
            .send(
                app.http
                    .get(app.url("/api/servers"))
                    .bearer_auth("test-token-0123456788"),
            )
            .await;
        wrong.assert_error(401, "unauthorized");

        let wrong_scheme = app
            .send(
                app.http
                    .get(app.url("/api/servers"))
                    .basic_auth("user", Some(TOKEN)),
            )
            .await;
        wrong_scheme.assert_error(401, "unauthorized");

        let sneaky_create = app
            .send(
                app.http
                    .post(app.url("/api/servers"))
                    .bearer_auth("wrong")
                    .json(&json!({ "name": "intruder", "url": "http://x" })),
            )
            .await;
        sneaky_create.assert_error(401, "unauthorized");

        // The right token gets through, and the refused create left nothing behind.
        let list = app.get("/api/servers").await;
        assert_eq!(list.status, 200, "{list:?}");
        assert_eq!(list.body, json!([]));

        // Probes are open: orchestrators do not hold the token.
        let live = app.send(app.http.get(app.url("/health/live"))).await;
        assert_eq!(live.status, 200);
        app.finish().await;
    })
    .await;
}
