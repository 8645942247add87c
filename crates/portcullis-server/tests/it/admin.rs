//! Forward-auth (`/v1/verify`) and the admin API.

use crate::common::{PASSWORD, TestServer, expect_problem};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

#[tokio::test]
async fn verify_answers_for_reverse_proxies() {
    let s = TestServer::start().await;
    let (user, cookie) = s.user("fwd@example.com").await;
    let res = s.get_as("/v1/verify", &cookie).await;
    assert_eq!(res.status(), StatusCode::OK);
    let h = res.headers();
    assert_eq!(h["x-portcullis-user"], user["id"].as_str().expect("id"));
    assert_eq!(h["x-portcullis-email"], "fwd@example.com");
    assert_eq!(h["x-portcullis-roles"], "user");

    let res = s.get_as("/v1/verify?role=user", &cookie).await;
    assert_eq!(res.status(), StatusCode::OK);
    let res = s.get_as("/v1/verify?role=admin", &cookie).await;
    expect_problem(res, StatusCode::FORBIDDEN, "forbidden").await;
    let res = s.get("/v1/verify").send().await.expect("send");
    expect_problem(res, StatusCode::UNAUTHORIZED, "unauthenticated").await;
    // Proxies may add their own query parameters; they are ignored.
    let res = s.get_as("/v1/verify?role=user&rd=%2Fapp", &cookie).await;
    assert_eq!(res.status(), StatusCode::OK);

    s.make_admin(&user).await;
    let res = s.get_as("/v1/verify?role=admin", &cookie).await;
    assert_eq!(res.status(), StatusCode::OK, "a role granted takes effect on the next request");
    assert_eq!(res.headers()["x-portcullis-roles"], "admin,user");
}

async fn admin_server() -> (TestServer, Value, String) {
    let s = TestServer::start().await;
    let admin = s.register("root@example.com").await;
    s.make_admin(&admin).await;
    let cookie = s.login("root@example.com").await;
    (s, admin, cookie)
}

fn user_path(user: &Value) -> String {
    format!("/v1/admin/users/{}", user["id"].as_str().expect("id"))
}

#[tokio::test]
async fn admin_api_is_for_admins_only() {
    let (s, admin, _) = admin_server().await;
    let (_, plain) = s.user("plain@example.com").await;
    let target = user_path(&admin);
    let calls = [
        (Method::GET, "/v1/admin/users".to_owned(), None),
        (Method::POST, "/v1/admin/users".to_owned(), Some(json!({"email": "x@example.com", "password": PASSWORD}))),
        (Method::GET, target.clone(), None),
        (Method::PATCH, target.clone(), Some(json!({"disabled": true}))),
        (Method::POST, format!("{target}/logout"), None),
    ];
    for (method, path, body) in calls {
        let mut req = s.request(method.clone(), &path);
        if let Some(b) = &body {
            req = req.json(b);
        }
        let res = req.try_clone().expect("clone").header("cookie", &plain).send().await.expect("send");
        expect_problem(res, StatusCode::FORBIDDEN, "forbidden").await;
        let res = req.send().await.expect("send");
        expect_problem(res, StatusCode::UNAUTHORIZED, "unauthenticated").await;
    }
    // Nothing happened to the admin.
    s.login("root@example.com").await;
}

#[tokio::test]
async fn admins_list_create_and_change_roles() {
    let (s, _, cookie) = admin_server().await;
    let res = s
        .send_as(
            Method::POST,
            "/v1/admin/users",
            &cookie,
            &json!({"email": "New@Example.com", "password": PASSWORD, "roles": ["billing"]}),
        )
        .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let created: Value = res.json().await.expect("json");
    let created = created["user"].clone();
    assert_eq!(created["email"], "new@example.com");
    assert_eq!(created["roles"], json!(["billing", "user"]));

    let res = s.get_as("/v1/admin/users", &cookie).await;
    let list: Value = res.json().await.expect("json");
    let emails: Vec<&str> =
        list["users"].as_array().expect("array").iter().filter_map(|u| u["email"].as_str()).collect();
    assert_eq!(emails, ["root@example.com", "new@example.com"]);

    let res = s.send_as(Method::PATCH, &user_path(&created), &cookie, &json!({"roles": ["admin"]})).await;
    assert_eq!(res.status(), StatusCode::OK);
    let updated: Value = res.json().await.expect("json");
    assert_eq!(updated["user"]["roles"], json!(["admin", "user"]));
    let res = s.get_as(&user_path(&created), &cookie).await;
    assert_eq!(res.json::<Value>().await.expect("json")["user"]["roles"], json!(["admin", "user"]));

    // The new admin can use the admin API at once.
    let new_cookie = s.login("new@example.com").await;
    let res = s.get_as("/v1/admin/users", &new_cookie).await;
    assert_eq!(res.status(), StatusCode::OK);

    // Duplicates, bad roles and bad input are refused.
    let res = s
        .send_as(Method::POST, "/v1/admin/users", &cookie, &json!({"email": "NEW@example.com", "password": PASSWORD}))
        .await;
    expect_problem(res, StatusCode::CONFLICT, "email_taken").await;
    let res = s.send_as(Method::PATCH, &user_path(&created), &cookie, &json!({"roles": ["Not A Role"]})).await;
    expect_problem(res, StatusCode::BAD_REQUEST, "invalid_role").await;
    let res = s.send_as(Method::PATCH, &user_path(&created), &cookie, &json!({"disabled": "yes"})).await;
    expect_problem(res, StatusCode::BAD_REQUEST, "invalid_body").await;
    for missing in ["/v1/admin/users/00000000-0000-7000-8000-000000000000", "/v1/admin/users/not-a-uuid"] {
        let res = s.send_as(Method::PATCH, missing, &cookie, &json!({"disabled": true})).await;
        expect_problem(res, StatusCode::NOT_FOUND, "user_not_found").await;
        let res = s.post_as(&format!("{missing}/logout"), &cookie).await;
        expect_problem(res, StatusCode::NOT_FOUND, "user_not_found").await;
    }
}

#[tokio::test]
async fn disabling_a_user_ends_their_sessions_and_blocks_login() {
    let (s, _, cookie) = admin_server().await;
    let (victim, victim_cookie) = s.user("victim@example.com").await;
    let second = s.login("victim@example.com").await;
    let res = s.send_as(Method::PATCH, &user_path(&victim), &cookie, &json!({"disabled": true})).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.json::<Value>().await.expect("json")["user"]["disabled"], true);
    for c in [&victim_cookie, &second] {
        expect_problem(s.me(c).await, StatusCode::UNAUTHORIZED, "unauthenticated").await;
    }
    let res = s.post_json("/v1/login", &json!({"email": "victim@example.com", "password": PASSWORD})).await;
    expect_problem(res, StatusCode::UNAUTHORIZED, "invalid_credentials").await;

    let res = s.send_as(Method::PATCH, &user_path(&victim), &cookie, &json!({"disabled": false})).await;
    assert_eq!(res.status(), StatusCode::OK);
    s.login("victim@example.com").await;
}

#[tokio::test]
async fn force_logout_ends_every_session_of_that_user() {
    let (s, _, cookie) = admin_server().await;
    let (victim, a) = s.user("forced@example.com").await;
    let b = s.login("forced@example.com").await;
    let (_, bystander) = s.user("bystander@example.com").await;
    let res = s.post(&format!("{}/logout", user_path(&victim))).header("cookie", &cookie).send().await.expect("send");
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    for c in [&a, &b] {
        expect_problem(s.me(c).await, StatusCode::UNAUTHORIZED, "unauthenticated").await;
    }
    assert_eq!(s.me(&bystander).await.status(), StatusCode::OK);
    assert_eq!(s.me(&cookie).await.status(), StatusCode::OK);
    // The user can sign in again.
    s.login("forced@example.com").await;
}

#[tokio::test]
async fn an_admin_cannot_lock_themselves_out() {
    let (s, admin, cookie) = admin_server().await;
    for body in [json!({"disabled": true}), json!({"roles": []}), json!({"roles": ["billing"]})] {
        let res = s
            .request(Method::PATCH, &user_path(&admin))
            .header("cookie", &cookie)
            .json(&body)
            .send()
            .await
            .expect("send");
        expect_problem(res, StatusCode::CONFLICT, "self_lockout").await;
    }
    let res = s.send_as(Method::PATCH, &user_path(&admin), &cookie, &json!({"roles": ["admin", "ops"]})).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(s.get_as("/v1/admin/users", &cookie).await.status(), StatusCode::OK);
}

/// Deleting an account ends its sessions and JWTs at once, frees its email, is refused for
/// one's own account and for an unknown id, and is audited with the admin as actor.
#[tokio::test]
async fn deleting_a_user_ends_everything_of_theirs_and_frees_the_email() {
    let (s, admin, cookie) = admin_server().await;
    let (victim, session) = s.user("leaving@example.com").await;
    let jwt = s.jwt_login("leaving@example.com").await;
    let access = jwt["access_token"].as_str().expect("token").to_owned();
    assert_eq!(s.me_bearer(&access).await, StatusCode::OK);
    let res = s.request(Method::DELETE, &user_path(&victim)).header("cookie", &cookie).send().await.expect("send");
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    expect_problem(s.me(&session).await, StatusCode::UNAUTHORIZED, "unauthenticated").await;
    assert_eq!(s.me_bearer(&access).await, StatusCode::UNAUTHORIZED);
    let res = s.refresh(jwt["refresh_token"].as_str().expect("refresh")).await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    let res = s.get_as(&user_path(&victim), &cookie).await;
    expect_problem(res, StatusCode::NOT_FOUND, "user_not_found").await;
    let res = s.request(Method::DELETE, &user_path(&victim)).header("cookie", &cookie).send().await.expect("send");
    expect_problem(res, StatusCode::NOT_FOUND, "user_not_found").await;
    let res = s.request(Method::DELETE, &user_path(&admin)).header("cookie", &cookie).send().await.expect("send");
    expect_problem(res, StatusCode::CONFLICT, "self_lockout").await;
    s.register("leaving@example.com").await;
    let audit: Value = s.get_as("/v1/admin/audit?limit=500", &cookie).await.json().await.expect("json");
    let deleted = audit["events"]
        .as_array()
        .expect("events")
        .iter()
        .find(|e| e["kind"] == "user_deleted")
        .cloned()
        .expect("audited");
    assert_eq!(deleted["user_id"], victim["id"]);
    assert_eq!(deleted["actor"], admin["id"]);
    assert!(deleted["detail"].as_str().expect("detail").contains("leaving@example.com"), "{deleted}");
}
