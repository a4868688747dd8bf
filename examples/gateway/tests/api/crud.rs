//! The CRUD routes, their error codes, and read-your-writes.

use serde_json::json;

use crate::app::{App, names, within};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crud_round_trip() {
    within(async {
        let app = App::start().await;

        let created = app
            .post(
                "/api/servers",
                json!({ "name": "alpha", "url": "http://10.0.0.1:8080" }),
            )
            .await;
        assert_eq!(created.status, 201, "{created:?}");
        let id = created.body["id"].as_i64().expect("an id");
        assert_eq!(
            created
                .headers
                .get(reqwest::header::LOCATION)
                .and_then(|v| v.to_str().ok()),
            Some(format!("/api/servers/{id}").as_str())
        );
        assert_eq!(created.body["name"], "alpha");
        assert_eq!(created.body["url"], "http://10.0.0.1:8080");
        let created_at = created.body["created_at"].as_str().expect("created_at");
        assert!(
            created_at.len() == "2024-01-02T03:04:05.123456Z".len() && created_at.ends_with('Z'),
            "RFC 3339 in UTC: {created_at}"
        );

        let fetched = app.get(&format!("/api/servers/{id}")).await;
        assert_eq!(fetched.status, 200);
        assert_eq!(
            fetched.body, created.body,
            "get returns what create returned"
        );

        let replaced = app
            .send(
                app.request(reqwest::Method::PUT, &format!("/api/servers/{id}"))
                    .json(&json!({ "name": "alpha-2", "url": "https://b.example" })),
            )
            .await;
        assert_eq!(replaced.status, 200, "{replaced:?}");
        assert_eq!(replaced.body["id"], id);
        assert_eq!(replaced.body["name"], "alpha-2");
        assert_eq!(replaced.body["url"], "https://b.example");
        assert_eq!(replaced.body["created_at"], created_at);
        assert!(
            replaced.body["updated_at"].as_str() >= Some(created_at),
            "updated_at moves forward: {replaced:?}"
        );

        let patched = app
            .send(
                app.request(reqwest::Method::PATCH, &format!("/api/servers/{id}"))
                    .json(&json!({ "url": "http://c.example" })),
            )
            .await;
        assert_eq!(patched.status, 200, "{patched:?}");
        assert_eq!(
            patched.body["name"], "alpha-2",
            "a patch keeps what it omits"
        );
        assert_eq!(patched.body["url"], "http://c.example");

        let list = app.get("/api/servers").await;
        assert_eq!(list.status, 200);
        assert_eq!(list.body, json!([patched.body]));

        let deleted = app
            .send(app.request(reqwest::Method::DELETE, &format!("/api/servers/{id}")))
            .await;
        assert_eq!(deleted.status, 204, "{deleted:?}");
        app.get(&format!("/api/servers/{id}"))
            .await
            .assert_error(404, "not_found");
        app.send(app.request(reqwest::Method::DELETE, &format!("/api/servers/{id}")))
            .await
            .assert_error(404, "not_found");
        assert_eq!(app.scalar("SELECT count(*) FROM servers").await, 0);
        app.finish().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn name_filter_lists_only_the_named_server() {
    within(async {
        let app = App::start().await;
        for name in ["alpha", "beta", "gamma", "delta one"] {
            app.create(name, "http://h").await;
        }

        let all = app.get("/api/servers").await;
        assert_eq!(names(&all.body), ["alpha", "beta", "gamma", "delta one"]);

        let beta = app.get("/api/servers?name=beta").await;
        assert_eq!(beta.status, 200);
        assert_eq!(names(&beta.body), ["beta"]);

        let spaced = app.get("/api/servers?name=delta%20one").await;
        assert_eq!(names(&spaced.body), ["delta one"]);

        let none = app.get("/api/servers?name=zeta").await;
        assert_eq!(none.status, 200);
        assert_eq!(none.body, json!([]));

        // Exact match, not a prefix or pattern.
        let prefix = app.get("/api/servers?name=alp").await;
        assert_eq!(prefix.body, json!([]));
        let pattern = app.get("/api/servers?name=%25").await;
        assert_eq!(pattern.body, json!([]));
        app.finish().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_name_is_409_conflict() {
    within(async {
        let app = App::start().await;
        app.create("alpha", "http://a").await;
        let other = app.create("beta", "http://b").await;

        let duplicate = app
            .post(
                "/api/servers",
                json!({ "name": "alpha", "url": "http://other" }),
            )
            .await;
        duplicate.assert_error(409, "conflict");
        assert_eq!(
            duplicate.body["error"]["retryable"], false,
            "repeating it cannot help"
        );

        // Renaming onto a taken name is the same conflict.
        let rename = app
            .send(
                app.request(
                    reqwest::Method::PATCH,
                    &format!("/api/servers/{}", other["id"]),
                )
                .json(&json!({ "name": "alpha" })),
            )
            .await;
        rename.assert_error(409, "conflict");

        assert_eq!(
            app.scalar("SELECT count(*) FROM servers WHERE name = 'alpha'")
                .await,
            1
        );
        assert_eq!(
            app.scalar("SELECT count(*) FROM servers WHERE name = 'beta'")
                .await,
            1,
            "the failed rename changed nothing"
        );
        app.finish().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_ids_and_routes_are_404_not_found() {
    within(async {
        let app = App::start().await;
        app.get("/api/servers/424242")
            .await
            .assert_error(404, "not_found");
        app.send(
            app.request(reqwest::Method::PUT, "/api/servers/424242")
                .json(&json!({ "name": "x", "url": "http://x" })),
        )
        .await
        .assert_error(404, "not_found");
        app.send(
            app.request(reqwest::Method::PATCH, "/api/servers/424242")
                .json(&json!({ "url": "http://x" })),
        )
        .await
        .assert_error(404, "not_found");
        app.send(app.request(reqwest::Method::DELETE, "/api/servers/424242"))
            .await
            .assert_error(404, "not_found");
        app.get("/api/nothing-here")
            .await
            .assert_error(404, "not_found");
        app.send(app.request(reqwest::Method::DELETE, "/api/servers"))
            .await
            .assert_error(405, "method_not_allowed");
        assert_eq!(
            app.scalar("SELECT count(*) FROM servers").await,
            0,
            "the PUT to an unknown id created nothing"
        );
        app.finish().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_input_is_invalid_request() {
    within(async {
        let app = App::start().await;
        let post_raw = |body: &'static str| {
            app.request(reqwest::Method::POST, "/api/servers")
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body)
        };

        app.send(post_raw("{not json"))
            .await
            .assert_error(400, "invalid_request");
        app.send(post_raw(r#"{"name":"a"}"#))
            .await
            .assert_error(422, "invalid_request");
        app.send(post_raw(r#"{"name":"a","url":"http://a","extra":1}"#))
            .await
            .assert_error(422, "invalid_request");
        app.send(post_raw(r#"{"name":"a","url":"ftp://a"}"#))
            .await
            .assert_error(422, "invalid_request");
        app.send(post_raw(r#"{"name":"","url":"http://a"}"#))
            .await
            .assert_error(422, "invalid_request");
        app.send(
            app.request(reqwest::Method::POST, "/api/servers")
                .body(r#"{"name":"a","url":"http://a"}"#),
        )
        .await
        .assert_error(415, "invalid_request");
        app.get("/api/servers/not-a-number")
            .await
            .assert_error(400, "invalid_request");
        app.send(
            app.request(reqwest::Method::PATCH, "/api/servers/1")
                .json(&json!({})),
        )
        .await
        .assert_error(422, "invalid_request");

        let list = app.get("/api/servers").await;
        assert_eq!(list.body, json!([]), "nothing invalid was stored");
        app.finish().await;
    })
    .await;
}

/// Without a replica every read is strong; the option is still validated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consistency_is_strong_or_eventual() {
    within(async {
        let app = App::start().await;
        let created = app.create("alpha", "http://a").await;
        for path in [
            "/api/servers?consistency=strong".to_owned(),
            "/api/servers?name=alpha&consistency=eventual".to_owned(),
            format!("/api/servers/{}?consistency=strong", created["id"]),
        ] {
            let reply = app.get(&path).await;
            assert_eq!(reply.status, 200, "{path}: {reply:?}");
        }
        let header = app
            .send(
                app.request(reqwest::Method::GET, "/api/servers")
                    .header("Consistency", "Strong"),
            )
            .await;
        assert_eq!(header.status, 200, "{header:?}");
        assert_eq!(names(&header.body), ["alpha"]);
        app.get("/api/servers?consistency=sometimes")
            .await
            .assert_error(400, "invalid_request");
        app.send(
            app.request(reqwest::Method::GET, "/api/servers")
                .header("Consistency", "maybe"),
        )
        .await
        .assert_error(400, "invalid_request");
        app.finish().await;
    })
    .await;
}
