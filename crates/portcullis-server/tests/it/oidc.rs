//! The OpenID Connect provider, driven by a real relying-party library (the `openidconnect`
//! crate): discovery, the code flow with PKCE through the real sign-in form with a
//! cookie-holding HTTP client, ID-token validation, userinfo, refresh, and the grant's bond
//! to the browser session. Then the hostile cases, each a clear OAuth error with nothing
//! issued.

use openidconnect::core::{CoreAuthenticationFlow, CoreClient, CoreProviderMetadata, CoreUserInfoClaims};
use openidconnect::{
    AccessTokenHash, AuthorizationCode, ClientId, ClientSecret, CsrfToken, IssuerUrl, Nonce, OAuth2TokenResponse,
    PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, Scope, TokenResponse,
};
use portcullis_service::{Actor, OidcClientSpec};
use reqwest::redirect::Policy;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::common::{PASSWORD, TestServer};

const REDIRECT: &str = "http://127.0.0.1:9/callback";

async fn server() -> TestServer {
    TestServer::start_with(|c| c.session.cookie_secure = false).await
}

/// Registers an application; its id and secret (none when public).
async fn app(s: &TestServer, spec: OidcClientSpec) -> (String, Option<String>) {
    let spec = OidcClientSpec {
        name: if spec.name.is_empty() { "Grafana".into() } else { spec.name },
        redirect_uris: if spec.redirect_uris.is_empty() { vec![REDIRECT.into()] } else { spec.redirect_uris },
        ..spec
    };
    let registered = s
        .service
        .register_oidc_client(Actor::Cli, OidcClientSpec { first_party: true, ..spec }, &Default::default())
        .await
        .expect("register");
    (registered.client.id.to_string(), registered.secret.map(|s| s.expose().to_owned()))
}

async fn confidential(s: &TestServer) -> (String, String) {
    let (id, secret) = app(s, OidcClientSpec::default()).await;
    (id, secret.expect("a confidential client has a secret"))
}

/// An HTTP client for the relying party's own calls: redirects are not followed.
fn rp_http() -> reqwest::Client {
    reqwest::Client::builder().redirect(Policy::none()).build().expect("client")
}

/// A browser: keeps cookies, does not follow redirects (each step is looked at).
fn browser() -> reqwest::Client {
    reqwest::Client::builder().cookie_store(true).redirect(Policy::none()).build().expect("client")
}

async fn relying_party(
    s: &TestServer,
    id: &str,
    secret: Option<&str>,
) -> CoreClient<
    openidconnect::EndpointSet,
    openidconnect::EndpointNotSet,
    openidconnect::EndpointNotSet,
    openidconnect::EndpointNotSet,
    openidconnect::EndpointMaybeSet,
    openidconnect::EndpointMaybeSet,
> {
    let issuer = IssuerUrl::new(s.base.clone()).expect("issuer");
    let metadata = CoreProviderMetadata::discover_async(issuer, &rp_http()).await.expect("discovery");
    CoreClient::from_provider_metadata(
        metadata,
        ClientId::new(id.to_owned()),
        secret.map(|s| ClientSecret::new(s.to_owned())),
    )
    .set_redirect_uri(RedirectUrl::new(REDIRECT.into()).expect("redirect"))
}

fn location(res: &reqwest::Response) -> String {
    res.headers().get("location").and_then(|v| v.to_str().ok()).expect("a redirect").to_owned()
}

fn query_of(url: &str) -> Vec<(String, String)> {
    let url = url::Url::parse(url).expect("absolute URL");
    url.query_pairs().into_owned().collect()
}

fn param(url: &str, name: &str) -> Option<String> {
    query_of(url).into_iter().find(|(k, _)| k == name).map(|(_, v)| v)
}

/// Follows a browser from `url` through Portcullis until it is sent away to the
/// application; signs in on the way if asked. Returns where it was sent.
async fn browse(s: &TestServer, browser: &reqwest::Client, url: &str, email: &str) -> String {
    let mut url = url.to_owned();
    for _ in 0..6 {
        let res = browser.get(&url).send().await.expect("send");
        if res.status() == StatusCode::OK && url.contains("/login?") {
            let page = res.text().await.expect("page");
            let return_to = param(&url, "return_to").expect("the sign-in page comes back");
            assert!(page.contains("to continue to"), "the sign-in page names the application: {page}");
            let form = [("email", email), ("password", PASSWORD), ("return_to", &return_to)];
            let res = browser.post(s.url("/login")).form(&form).send().await.expect("sign in");
            assert_eq!(res.status(), StatusCode::SEE_OTHER, "{:?}", res.text().await);
            url = s.url(&location(&res));
            continue;
        }
        assert!(res.status().is_redirection(), "{url}: {} {:?}", res.status(), res.text().await);
        let next = location(&res);
        if next.starts_with(REDIRECT) || !next.starts_with('/') && !next.starts_with(&s.base) {
            return next;
        }
        url = if next.starts_with('/') { s.url(&next) } else { next };
    }
    panic!("too many redirects from {url}");
}

#[tokio::test]
async fn an_application_signs_a_person_in_with_the_code_flow_and_pkce() {
    let s = server().await;
    s.register("ada@example.com").await;
    let (id, secret) = confidential(&s).await;
    let rp = relying_party(&s, &id, Some(&secret)).await;
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let (auth_url, csrf, nonce) = rp
        .authorize_url(CoreAuthenticationFlow::AuthorizationCode, CsrfToken::new_random, Nonce::new_random)
        .add_scope(Scope::new("email".into()))
        .add_scope(Scope::new("offline_access".into()))
        .add_scope(Scope::new("roles".into()))
        .set_pkce_challenge(challenge)
        .url();
    let browser = browser();
    let back = browse(&s, &browser, auth_url.as_str(), "ada@example.com").await;
    assert!(back.starts_with(REDIRECT), "{back}");
    assert_eq!(param(&back, "state").as_deref(), Some(csrf.secret().as_str()));
    assert_eq!(param(&back, "iss").as_deref(), Some(s.base.as_str()));
    let code = param(&back, "code").expect("a code");

    let tokens = rp
        .exchange_code(AuthorizationCode::new(code.clone()))
        .expect("token endpoint")
        .set_pkce_verifier(verifier)
        .request_async(&rp_http())
        .await
        .expect("the code is exchanged");
    let id_token = tokens.id_token().expect("an ID token");
    let id_verifier = rp.id_token_verifier();
    let claims = id_token.claims(&id_verifier, &nonce).expect("the ID token verifies (RS256, iss, aud, exp, nonce)");
    assert_eq!(
        *id_token.signing_alg().expect("alg"),
        openidconnect::core::CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256
    );
    let expected = AccessTokenHash::from_token(
        tokens.access_token(),
        id_token.signing_alg().expect("alg"),
        id_token.signing_key(&id_verifier).expect("key"),
    )
    .expect("hash");
    assert_eq!(claims.access_token_hash(), Some(&expected), "at_hash");
    assert_eq!(claims.email().map(|e| e.as_str()), Some("ada@example.com"));
    assert_eq!(claims.email_verified(), Some(false), "a registration's address, never confirmed by a link");
    assert!(claims.auth_time().is_some(), "auth_time");
    let raw: Value =
        serde_json::from_slice(&base64url(id_token.to_string().split('.').nth(1).expect("payload"))).expect("claims");
    assert_eq!(raw["amr"], json!(["pwd"]));
    assert!(raw["sid"].as_str().is_some_and(|sid| sid.len() == 22), "{raw}");
    assert_eq!(
        tokens.scopes().map(|s| s.iter().map(|s| s.as_str()).collect::<Vec<_>>()).unwrap_or_default(),
        ["openid", "email", "offline_access", "roles"]
    );

    // userinfo, through the library.
    let info: CoreUserInfoClaims = rp
        .user_info(tokens.access_token().clone(), None)
        .expect("userinfo endpoint")
        .request_async(&rp_http())
        .await
        .expect("userinfo");
    assert_eq!(info.subject().as_str(), claims.subject().as_str());
    assert_eq!(info.email().map(|e| e.as_str()), Some("ada@example.com"));

    // The access token is RFC 9068 with client_id and scope; it opens forward-auth but not the
    // account API.
    let access = tokens.access_token().secret().clone();
    let at: Value = serde_json::from_slice(&base64url(access.split('.').nth(1).expect("payload"))).expect("claims");
    assert_eq!(at["client_id"], json!(id));
    assert_eq!(at["scope"], "openid email offline_access roles");
    assert_eq!(s.bearer(Method::GET, "/v1/verify", &access).send().await.expect("send").status(), StatusCode::OK);
    assert_eq!(s.me_bearer(&access).await, StatusCode::UNAUTHORIZED);

    // Refresh rotates; the replaced token, presented again, ends the application's session.
    let refresh = tokens.refresh_token().expect("offline_access gives a refresh token").clone();
    let refreshed =
        rp.exchange_refresh_token(&refresh).expect("token endpoint").request_async(&rp_http()).await.expect("refresh");
    let next = refreshed.refresh_token().expect("a new refresh token").clone();
    assert_ne!(next.secret(), refresh.secret());
    let again = refreshed.id_token().expect("an ID token on refresh").claims(&id_verifier, |_: Option<&Nonce>| Ok(()));
    assert_eq!(again.expect("verifies").subject().as_str(), claims.subject().as_str());
    s.advance(std::time::Duration::from_secs(30));
    let reuse = rp.exchange_refresh_token(&refresh).expect("token endpoint").request_async(&rp_http()).await;
    assert!(format!("{reuse:?}").contains("invalid_grant"), "{reuse:?}");
    let after = rp.exchange_refresh_token(&next).expect("token endpoint").request_async(&rp_http()).await;
    assert!(after.is_err(), "the whole grant ended with the reuse");
    let status = s.bearer(Method::GET, "/oauth2/userinfo", refreshed.access_token().secret()).send().await;
    assert_eq!(status.expect("send").status(), StatusCode::UNAUTHORIZED);
}

fn base64url(s: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(s).expect("base64url")
}

/// Signs in through the flow with a fresh browser and returns (browser, token answer).
async fn signed_in_app(s: &TestServer, id: &str, secret: &str, scope: &str) -> (reqwest::Client, Value) {
    let browser = browser();
    let verifier = PkceCodeVerifier::new("v".repeat(64));
    let challenge = PkceCodeChallenge::from_code_verifier_sha256(&verifier);
    let q = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("response_type", "code")
        .append_pair("client_id", id)
        .append_pair("redirect_uri", REDIRECT)
        .append_pair("scope", scope)
        .append_pair("state", "st")
        .append_pair("code_challenge", challenge.as_str())
        .append_pair("code_challenge_method", "S256")
        .finish();
    let back = browse(s, &browser, &s.url(&format!("/oauth2/authorize?{q}")), "ada@example.com").await;
    let code = param(&back, "code").unwrap_or_else(|| panic!("a code: {back}"));
    let res = token(
        s,
        id,
        secret,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT),
            ("code_verifier", verifier.secret()),
        ],
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK, "{:?}", res.text().await);
    (browser, res.json().await.expect("json"))
}

async fn token(s: &TestServer, id: &str, secret: &str, form: &[(&str, &str)]) -> reqwest::Response {
    s.post("/oauth2/token").basic_auth(id, Some(secret)).form(form).send().await.expect("send")
}

/// The application's access token and refresh token from `tokens` both stopped working.
async fn grant_is_over(s: &TestServer, id: &str, secret: &str, tokens: &Value) {
    let access = tokens["access_token"].as_str().expect("access");
    let res = s.bearer(Method::GET, "/oauth2/userinfo", access).send().await.expect("send");
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    let refresh = tokens["refresh_token"].as_str().expect("refresh");
    let form = [("grant_type", "refresh_token"), ("refresh_token", refresh)];
    token_error(s, id, secret, &form, StatusCode::BAD_REQUEST, "invalid_grant").await;
}

async fn token_error(s: &TestServer, id: &str, secret: &str, form: &[(&str, &str)], status: StatusCode, error: &str) {
    oauth_error(token(s, id, secret, form).await, status, error).await;
}

async fn oauth_error(res: reqwest::Response, status: StatusCode, error: &str) {
    assert_eq!(res.status(), status, "for {error}");
    assert_eq!(res.headers().get("content-type").and_then(|v| v.to_str().ok()), Some("application/problem+json"));
    assert_eq!(res.headers().get("cache-control").and_then(|v| v.to_str().ok()), Some("no-store"));
    assert_eq!(res.headers().get("pragma").and_then(|v| v.to_str().ok()), Some("no-cache"));
    let body: Value = res.json().await.expect("json");
    assert_eq!(body["error"], error, "{body}");
    assert_eq!(body["code"], error, "the OAuth error is the problem's code too: {body}");
    assert_eq!(body["status"], status.as_u16(), "{body}");
    assert!(body["error_description"].is_string(), "{body}");
}

#[tokio::test]
async fn ending_the_browser_session_ends_the_applications_signed_in_through_it() {
    let s = server().await;
    s.register("ada@example.com").await;
    let (id, secret) = confidential(&s).await;
    let (browser, tokens) = signed_in_app(&s, &id, &secret, "openid offline_access").await;
    let access = tokens["access_token"].as_str().expect("access");
    assert_eq!(s.bearer(Method::GET, "/oauth2/userinfo", access).send().await.expect("send").status(), StatusCode::OK);
    let posted = s.bearer(Method::POST, "/oauth2/userinfo", access).send().await.expect("send");
    assert_eq!(posted.status(), StatusCode::OK, "userinfo answers POST too");
    assert_eq!(posted.json::<Value>().await.expect("json")["sub"], id_token_claims(&tokens)["sub"]);
    // The person signs out of Portcullis in the browser.
    let res = browser.post(s.url("/v1/logout")).send().await.expect("logout");
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    grant_is_over(&s, &id, &secret, &tokens).await;
}

#[tokio::test]
async fn without_offline_access_there_is_no_refresh_token_and_the_grant_ends_with_its_token() {
    let s = server().await;
    s.register("ada@example.com").await;
    let (id, secret) = confidential(&s).await;
    let (_, tokens) = signed_in_app(&s, &id, &secret, "openid").await;
    assert!(tokens.get("refresh_token").is_none(), "{tokens}");
    assert_eq!(tokens["scope"], "openid");
    let sessions = s.service.sessions.list_for_user(&user_id(&s, "ada@example.com").await).await.expect("list");
    let grant = sessions.iter().find(|r| r.grant.is_some()).expect("the application's record");
    assert_eq!(grant.expires_at.since(grant.created_at), s.settings.jwt.access_ttl);
}

async fn user_id(s: &TestServer, email: &str) -> portcullis_core::UserId {
    let email = portcullis_core::Email::parse(email).expect("email");
    s.service.users.user_by_email(&email).await.expect("store").expect("user").0.id
}

#[tokio::test]
async fn a_code_works_once_for_its_client_redirect_and_verifier_and_a_second_use_revokes_the_first() {
    let s = server().await;
    s.register("ada@example.com").await;
    let (id, secret) = confidential(&s).await;
    let (other, other_secret) = confidential(&s).await;
    let browser = browser();
    let verifier = "w".repeat(50);
    let challenge = portcullis_core::oidc::code_challenge(&verifier);
    let authorize = |challenge: &str| {
        let q = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("response_type", "code")
            .append_pair("client_id", &id)
            .append_pair("redirect_uri", REDIRECT)
            .append_pair("scope", "openid offline_access")
            .append_pair("code_challenge", challenge)
            .append_pair("code_challenge_method", "S256")
            .finish();
        s.url(&format!("/oauth2/authorize?{q}"))
    };
    let code_of = |back: String| param(&back, "code").expect("code");
    let code = code_of(browse(&s, &browser, &authorize(&challenge), "ada@example.com").await);
    let redeem = |code: String, client: (String, String), redirect: &'static str, verifier: String| {
        let s = &s;
        async move {
            token(
                s,
                &client.0,
                &client.1,
                &[
                    ("grant_type", "authorization_code"),
                    ("code", &code),
                    ("redirect_uri", redirect),
                    ("code_verifier", &verifier),
                ],
            )
            .await
        }
    };
    // Another client's code: refused, and the code is not spent by it.
    oauth_error(
        redeem(code.clone(), (other.clone(), other_secret.clone()), REDIRECT, verifier.clone()).await,
        StatusCode::BAD_REQUEST,
        "invalid_grant",
    )
    .await;
    // A wrong verifier, and a different redirect URI: refused (each spends the code).
    let code2 = code_of(browse(&s, &browser, &authorize(&challenge), "ada@example.com").await);
    oauth_error(
        redeem(code2, (id.clone(), secret.clone()), REDIRECT, "x".repeat(50)).await,
        StatusCode::BAD_REQUEST,
        "invalid_grant",
    )
    .await;
    let code3 = code_of(browse(&s, &browser, &authorize(&challenge), "ada@example.com").await);
    oauth_error(
        redeem(code3, (id.clone(), secret.clone()), "http://127.0.0.1:9/callback/", verifier.clone()).await,
        StatusCode::BAD_REQUEST,
        "invalid_grant",
    )
    .await;
    // The first code, properly: tokens.
    let res = redeem(code.clone(), (id.clone(), secret.clone()), REDIRECT, verifier.clone()).await;
    assert_eq!(res.status(), StatusCode::OK);
    let tokens: Value = res.json().await.expect("json");
    let access = tokens["access_token"].as_str().expect("access").to_owned();
    assert_eq!(s.bearer(Method::GET, "/oauth2/userinfo", &access).send().await.expect("send").status(), StatusCode::OK);
    // The same code again: refused, and what it issued is revoked.
    oauth_error(
        redeem(code, (id.clone(), secret.clone()), REDIRECT, verifier).await,
        StatusCode::BAD_REQUEST,
        "invalid_grant",
    )
    .await;
    grant_is_over(&s, &id, &secret, &tokens).await;
    // A code past its 60 s.
    let late = code_of(browse(&s, &browser, &authorize(&challenge), "ada@example.com").await);
    s.advance(std::time::Duration::from_secs(61));
    oauth_error(
        redeem(late, (id.clone(), secret.clone()), REDIRECT, "w".repeat(50)).await,
        StatusCode::BAD_REQUEST,
        "invalid_grant",
    )
    .await;
}

#[tokio::test]
async fn redirect_uris_match_exactly_and_a_bad_one_is_a_page_never_a_redirect() {
    let s = server().await;
    let (id, _) = confidential(&s).await;
    for bad in [
        "http://127.0.0.1:9/callback/extra",
        "http://127.0.0.1:9/callback?x=1",
        "http://127.0.0.1:9/callback#f",
        "http://127.0.0.1:9/CALLBACK",
        "https://127.0.0.1:9/callback",
        "http://user@127.0.0.1:9/callback",
        "http://127.0.0.1:90/callback",
        "",
    ] {
        let q = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("response_type", "code")
            .append_pair("client_id", &id)
            .append_pair("redirect_uri", bad)
            .append_pair("scope", "openid")
            .finish();
        let res = browser().get(s.url(&format!("/oauth2/authorize?{q}"))).send().await.expect("send");
        assert_eq!(res.status(), StatusCode::BAD_REQUEST, "{bad:?}");
        assert!(res.headers().get("location").is_none(), "{bad:?} must not redirect");
        assert!(res.text().await.expect("page").contains("redirect URI is not registered"), "{bad:?}");
    }
    // An unknown client: a page too.
    let res = browser()
        .get(s.url(&format!(
            "/oauth2/authorize?response_type=code&client_id=nobody&redirect_uri={REDIRECT}&scope=openid"
        )))
        .send()
        .await
        .expect("send");
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    assert!(res.headers().get("location").is_none());
}

/// An authorization request's errors that go back to the client's redirect URI.
#[tokio::test]
async fn request_errors_go_back_to_the_application_with_its_state() {
    let s = server().await;
    s.register("ada@example.com").await;
    let (id, _) = confidential(&s).await;
    let (public, _) = app(&s, OidcClientSpec { public: true, ..Default::default() }).await;
    let challenge = portcullis_core::oidc::code_challenge(&"v".repeat(43));
    type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, &'a str);
    let cases: Vec<Case<'_>> = vec![
        (&id, vec![("response_type", "token")], "unsupported_response_type"),
        (&id, vec![("scope", "profile")], "invalid_scope"),
        (&id, vec![("code_challenge", &challenge), ("code_challenge_method", "plain")], "invalid_request"),
        (&id, vec![("code_challenge", &challenge)], "invalid_request"),
        (&id, vec![("request", "eyJhbGciOiJub25lIn0.e30.")], "request_not_supported"),
        (&id, vec![("request_uri", "https://evil.example/r")], "request_uri_not_supported"),
        (&id, vec![("prompt", "none")], "login_required"),
        (&id, vec![("prompt", "none login")], "invalid_request"),
        (&id, vec![("max_age", "soon")], "invalid_request"),
        (&public, vec![], "invalid_request"),
    ];
    for (client, extra, error) in cases {
        let mut params: Vec<(&str, &str)> = vec![
            ("client_id", client),
            ("redirect_uri", REDIRECT),
            ("state", "s-1"),
            ("response_type", "code"),
            ("scope", "openid"),
        ];
        for (k, v) in extra {
            params.retain(|(name, _)| *name != k);
            params.push((k, v));
        }
        let q = url::form_urlencoded::Serializer::new(String::new()).extend_pairs(params).finish();
        let res = browser().get(s.url(&format!("/oauth2/authorize?{q}"))).send().await.expect("send");
        assert_eq!(res.status(), StatusCode::SEE_OTHER, "{error}");
        let back = location(&res);
        assert!(back.starts_with(REDIRECT), "{error}: {back}");
        assert_eq!(param(&back, "error").as_deref(), Some(error), "{back}");
        assert_eq!(param(&back, "state").as_deref(), Some("s-1"), "{back}");
        assert!(param(&back, "code").is_none());
    }
}

#[tokio::test]
async fn the_token_endpoint_refuses_clients_that_do_not_prove_themselves() {
    let s = server().await;
    let (id, secret) = confidential(&s).await;
    let form = [("grant_type", "client_credentials")];
    // No authentication, a wrong secret, a public client's id with a secret, and two methods.
    let none = s.post("/oauth2/token").form(&[("grant_type", "client_credentials"), ("client_id", &id)]).send();
    oauth_error(none.await.expect("send"), StatusCode::UNAUTHORIZED, "invalid_client").await;
    let wrong = token(&s, &id, "wrong", &form).await;
    let challenge = wrong.headers().get("www-authenticate").and_then(|v| v.to_str().ok()).unwrap_or_default();
    assert!(challenge.starts_with("Basic "), "a client that used Basic is challenged with Basic: {challenge:?}");
    oauth_error(wrong, StatusCode::UNAUTHORIZED, "invalid_client").await;
    let both = s
        .post("/oauth2/token")
        .basic_auth(&id, Some(&secret))
        .form(&[("grant_type", "client_credentials"), ("client_secret", secret.as_str())])
        .send();
    oauth_error(both.await.expect("send"), StatusCode::BAD_REQUEST, "invalid_request").await;
    let json_body = s.post("/oauth2/token").basic_auth(&id, Some(&secret)).json(&json!({"grant_type": "x"})).send();
    oauth_error(json_body.await.expect("send"), StatusCode::BAD_REQUEST, "invalid_request").await;
    token_error(&s, &id, &secret, &[("grant_type", "password")], StatusCode::BAD_REQUEST, "unsupported_grant_type")
        .await;

    // client_secret_post works as well as Basic; client credentials give a token for the
    // client itself, which forward-auth accepts and the account API does not.
    let res = s
        .post("/oauth2/token")
        .form(&[("grant_type", "client_credentials"), ("client_id", &id), ("client_secret", &secret)])
        .send()
        .await
        .expect("send");
    assert_eq!(res.status(), StatusCode::OK);
    let body: Value = res.json().await.expect("json");
    assert!(body.get("refresh_token").is_none() && body.get("id_token").is_none(), "{body}");
    let access = body["access_token"].as_str().expect("access");
    let res = s.bearer(Method::GET, "/v1/verify", access).send().await.expect("send");
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers().get("x-portcullis-user").and_then(|v| v.to_str().ok()), Some(id.as_str()));
    assert_eq!(s.me_bearer(access).await, StatusCode::UNAUTHORIZED);
    // A person's scope cannot be given to a client.
    token_error(
        &s,
        &id,
        &secret,
        &[("grant_type", "client_credentials"), ("scope", "openid")],
        StatusCode::BAD_REQUEST,
        "invalid_scope",
    )
    .await;
}

#[tokio::test]
async fn a_public_client_signs_in_with_pkce_and_no_secret() {
    let s = server().await;
    s.register("ada@example.com").await;
    let (id, secret) = app(&s, OidcClientSpec { public: true, ..Default::default() }).await;
    assert!(secret.is_none());
    let rp = relying_party(&s, &id, None).await;
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let (auth_url, _, nonce) = rp
        .authorize_url(CoreAuthenticationFlow::AuthorizationCode, CsrfToken::new_random, Nonce::new_random)
        .set_pkce_challenge(challenge)
        .url();
    let back = browse(&s, &browser(), auth_url.as_str(), "ada@example.com").await;
    let code = param(&back, "code").expect("code");
    let tokens = rp
        .exchange_code(AuthorizationCode::new(code))
        .expect("token endpoint")
        .set_pkce_verifier(verifier)
        .request_async(&rp_http())
        .await
        .expect("exchange");
    tokens.id_token().expect("id token").claims(&rp.id_token_verifier(), &nonce).expect("verifies");
    // A public client that sends a secret is not authenticated.
    let res = s
        .post("/oauth2/token")
        .basic_auth(&id, Some("made-up"))
        .form(&[("grant_type", "refresh_token"), ("refresh_token", "x")])
        .send();
    oauth_error(res.await.expect("send"), StatusCode::UNAUTHORIZED, "invalid_client").await;
}

#[tokio::test]
async fn prompt_login_and_max_age_ask_a_signed_in_person_to_sign_in_again() {
    let s = server().await;
    s.register("ada@example.com").await;
    let (id, secret) = confidential(&s).await;
    let (browser, _) = signed_in_app(&s, &id, &secret, "openid").await;
    let url = |extra: &str| {
        s.url(&format!(
            "/oauth2/authorize?response_type=code&client_id={id}&redirect_uri={REDIRECT}&scope=openid{extra}"
        ))
    };
    // Signed in: straight back with a code.
    let res = browser.get(url("")).send().await.expect("send");
    assert!(location(&res).starts_with(REDIRECT));
    // prompt=login: to the sign-in form, even though signed in.
    for extra in ["&prompt=login", "&max_age=0"] {
        s.advance(std::time::Duration::from_secs(2));
        let res = browser.get(url(extra)).send().await.expect("send");
        let to = location(&res);
        assert!(to.starts_with("/login?") && to.contains("reauth=1"), "{extra}: {to}");
        let page = browser.get(s.url(&to)).send().await.expect("send").text().await.expect("page");
        assert!(page.contains("name=\"password\""), "the form is shown: {extra}");
        // After signing in, the same request goes through.
        let back = browse(&s, &browser, &s.url(&to), "ada@example.com").await;
        assert!(param(&back, "code").is_some(), "{extra}: {back}");
    }
    // login_hint fills in the sign-in form.
    let res = self::browser().get(url("&prompt=login&login_hint=ada%40example.com")).send().await.expect("send");
    let page = self::browser().get(s.url(&location(&res))).send().await.expect("send").text().await.expect("page");
    assert!(page.contains("value=\"ada@example.com\""), "{page}");
    // prompt=none while signed in: a code, no page.
    let res = browser.get(url("&prompt=none")).send().await.expect("send");
    assert!(param(&location(&res), "code").is_some());
}

#[tokio::test]
async fn a_third_party_application_asks_for_consent() {
    let s = server().await;
    s.register("ada@example.com").await;
    let registered = s
        .service
        .register_oidc_client(
            Actor::Cli,
            OidcClientSpec {
                name: "Elsewhere".into(),
                redirect_uris: vec![REDIRECT.into()],
                first_party: false,
                ..Default::default()
            },
            &Default::default(),
        )
        .await
        .expect("register");
    let id = registered.client.id.to_string();
    let browser = browser();
    let url = s.url(&format!(
        "/oauth2/authorize?response_type=code&client_id={id}&redirect_uri={REDIRECT}&scope=openid%20email&state=s"
    ));
    // Not signed in: sign in first; then the consent page.
    let res = browser.get(&url).send().await.expect("send");
    let login = location(&res);
    let return_to = param(&s.url(&login), "return_to").expect("return_to");
    let form = [("email", "ada@example.com"), ("password", PASSWORD), ("return_to", &return_to)];
    let res = browser.post(s.url("/login")).form(&form).send().await.expect("sign in");
    let res = browser.get(s.url(&location(&res))).send().await.expect("send");
    assert_eq!(res.status(), StatusCode::OK);
    let page = res.text().await.expect("page");
    assert!(page.contains("Allow Elsewhere?") && page.contains("See your email address"), "{page}");
    let csrf = page.split("name=\"csrf\" value=\"").nth(1).and_then(|r| r.split('"').next()).expect("csrf").to_owned();
    let mut fields = query_of(&s.url(&return_to));
    fields.push(("csrf".into(), csrf.clone()));
    // prompt=none cannot skip it.
    let res = browser.get(format!("{url}&prompt=none")).send().await.expect("send");
    assert_eq!(param(&location(&res), "error").as_deref(), Some("consent_required"));
    // Deny: back with access_denied.
    let mut deny = fields.clone();
    deny.push(("decision".into(), "deny".into()));
    let res = browser.post(s.url("/oauth2/authorize")).form(&deny).send().await.expect("send");
    assert_eq!(param(&location(&res), "error").as_deref(), Some("access_denied"));
    // A wrong CSRF token: nothing issued.
    let mut forged: Vec<(String, String)> = fields.iter().filter(|(k, _)| k != "csrf").cloned().collect();
    forged.push(("csrf".into(), "forged".into()));
    forged.push(("decision".into(), "allow".into()));
    let res = browser.post(s.url("/oauth2/authorize")).form(&forged).send().await.expect("send");
    assert!(res.headers().get("location").is_none_or(|l| !l.to_str().unwrap_or("").contains("code=")));
    // Allow: a code.
    let mut allow = fields;
    allow.push(("decision".into(), "allow".into()));
    let res = browser.post(s.url("/oauth2/authorize")).form(&allow).send().await.expect("send");
    let back = location(&res);
    assert!(param(&back, "code").is_some() && param(&back, "state").as_deref() == Some("s"), "{back}");
}

#[tokio::test]
async fn discovery_lists_what_works() {
    let s = server().await;
    let doc: Value = s.get("/.well-known/openid-configuration").send().await.expect("send").json().await.expect("json");
    let rfc8414: Value =
        s.get("/.well-known/oauth-authorization-server").send().await.expect("send").json().await.expect("json");
    assert_eq!(doc, rfc8414);
    assert_eq!(doc["issuer"], s.base);
    assert_eq!(doc["code_challenge_methods_supported"], json!(["S256"]));
    assert_eq!(doc["id_token_signing_alg_values_supported"], json!(["RS256"]));
    // Every endpoint listed answers (none is a 404).
    for name in [
        "authorization_endpoint",
        "token_endpoint",
        "userinfo_endpoint",
        "jwks_uri",
        "introspection_endpoint",
        "revocation_endpoint",
        "end_session_endpoint",
    ] {
        let url = doc[name].as_str().expect(name);
        let res = browser().get(url).send().await.expect("send");
        assert_ne!(res.status(), StatusCode::NOT_FOUND, "{name}");
    }
    // The JWKS holds the RS256 key beside the configured (EdDSA) one.
    let jwks: Value = s.get("/.well-known/jwks.json").send().await.expect("send").json().await.expect("json");
    let algs: Vec<&str> = jwks["keys"].as_array().expect("keys").iter().filter_map(|k| k["alg"].as_str()).collect();
    assert!(algs.contains(&"RS256") && algs.contains(&"EdDSA"), "{algs:?}");
}

#[tokio::test]
async fn administrators_register_applications_through_the_api() {
    let s = server().await;
    let (admin, cookie) = s.user("root@example.com").await;
    s.make_admin(&admin).await;
    let create = |body: Value| {
        let (s, cookie) = (&s, cookie.clone());
        async move { s.send_as(Method::POST, "/v1/admin/clients", &cookie, &body).await }
    };
    let res = create(json!({"name": "Wiki", "kind": "confidential", "redirect_uris": [REDIRECT]})).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let made: Value = res.json().await.expect("json");
    assert_eq!(made["client"]["first_party"], true);
    assert!(made["client_secret"].as_str().is_some_and(|s| s.len() == 43));
    let id = made["client_id"].as_str().expect("id");
    let secret = made["client_secret"].as_str().expect("secret");
    assert_eq!(token(&s, id, secret, &[("grant_type", "client_credentials")]).await.status(), StatusCode::OK);
    let res = create(json!({"name": "App", "kind": "public", "redirect_uris": [REDIRECT], "first_party": false})).await;
    let made: Value = res.json().await.expect("json");
    assert_eq!((made["client"]["kind"].clone(), made["client_secret"].clone()), (json!("public"), Value::Null));
    assert_eq!(made["client"]["first_party"], false);
    for bad in [
        json!({"name": "x", "kind": "confidential"}),
        json!({"name": "x", "kind": "confidential", "redirect_uris": ["http://example.com/cb"]}),
        json!({"name": "x", "kind": "service", "redirect_uris": [REDIRECT]}),
    ] {
        crate::common::expect_problem(create(bad).await, StatusCode::BAD_REQUEST, "invalid_client_metadata").await;
    }
}

/// Signs in through `rp` with PKCE and scope `openid offline_access`; the token answer.
async fn library_sign_in<R>(s: &TestServer, rp: &R, email: &str) -> openidconnect::core::CoreTokenResponse
where
    R: LibraryClient,
{
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let url = rp.start(challenge);
    let back = browse(s, &browser(), &url, email).await;
    rp.finish(AuthorizationCode::new(param(&back, "code").expect("code")), verifier).await
}

/// The two steps of the code flow, whatever endpoints the client has set.
trait LibraryClient {
    fn start(&self, challenge: PkceCodeChallenge) -> String;
    async fn finish(
        &self,
        code: AuthorizationCode,
        verifier: openidconnect::PkceCodeVerifier,
    ) -> openidconnect::core::CoreTokenResponse;
}

impl<I: openidconnect::EndpointState, V: openidconnect::EndpointState> LibraryClient
    for CoreClient<
        openidconnect::EndpointSet,
        openidconnect::EndpointNotSet,
        I,
        V,
        openidconnect::EndpointMaybeSet,
        openidconnect::EndpointMaybeSet,
    >
{
    fn start(&self, challenge: PkceCodeChallenge) -> String {
        let (url, _, _) = self
            .authorize_url(CoreAuthenticationFlow::AuthorizationCode, CsrfToken::new_random, Nonce::new_random)
            .add_scope(Scope::new("offline_access".into()))
            .set_pkce_challenge(challenge)
            .url();
        url.to_string()
    }

    async fn finish(
        &self,
        code: AuthorizationCode,
        verifier: openidconnect::PkceCodeVerifier,
    ) -> openidconnect::core::CoreTokenResponse {
        self.exchange_code(code)
            .expect("token endpoint")
            .set_pkce_verifier(verifier)
            .request_async(&rp_http())
            .await
            .expect("exchange")
    }
}

type Introspecting = CoreClient<
    openidconnect::EndpointSet,
    openidconnect::EndpointNotSet,
    openidconnect::EndpointSet,
    openidconnect::EndpointSet,
    openidconnect::EndpointMaybeSet,
    openidconnect::EndpointMaybeSet,
>;

async fn introspect(
    rp: &Introspecting,
    token: &openidconnect::AccessToken,
) -> openidconnect::core::CoreTokenIntrospectionResponse {
    rp.introspect(token).request_async(&rp_http()).await.expect("introspect")
}

/// RFC 7009 revocation by `client`. (The library refuses to send a revocation over plain
/// HTTP, which the test server speaks, so this one form post is made here.)
async fn revoke(s: &TestServer, client: (&str, &str), token: &str) {
    let res = s.post("/oauth2/revoke").basic_auth(client.0, Some(client.1)).form(&[("token", token)]).send();
    assert_eq!(res.await.expect("send").status(), StatusCode::OK);
}

#[tokio::test]
async fn introspection_and_revocation_agree_with_the_replica() {
    use openidconnect::{IntrospectionUrl, RevocationUrl, TokenIntrospectionResponse};
    let s = server().await;
    s.register("ada@example.com").await;
    let doc: Value = s.get("/.well-known/openid-configuration").send().await.expect("send").json().await.expect("json");
    let (id, secret) = confidential(&s).await;
    let rp = relying_party(&s, &id, Some(&secret))
        .await
        .set_introspection_url(
            IntrospectionUrl::new(doc["introspection_endpoint"].as_str().expect("url").into()).expect("url"),
        )
        .set_revocation_url(RevocationUrl::new(doc["revocation_endpoint"].as_str().expect("url").into()).expect("url"));
    let (other, other_secret) = confidential(&s).await;
    let other_rp = relying_party(&s, &other, Some(&other_secret))
        .await
        .set_introspection_url(
            IntrospectionUrl::new(doc["introspection_endpoint"].as_str().expect("url").into()).expect("url"),
        )
        .set_revocation_url(RevocationUrl::new(doc["revocation_endpoint"].as_str().expect("url").into()).expect("url"));
    let tokens = library_sign_in(&s, &rp, "ada@example.com").await;
    let access = tokens.access_token().clone();
    let answer = introspect(&rp, &access).await;
    assert!(answer.active());
    assert_eq!(answer.client_id().map(|c| c.as_str()), Some(id.as_str()));
    assert_eq!(answer.username(), Some("ada@example.com"));
    assert!(answer.scopes().is_some_and(|s| s.iter().any(|s| s.as_str() == "offline_access")));
    // A resource server (another client) may introspect an access token too.
    assert!(introspect(&other_rp, &access).await.active());
    // A refresh token is active for its own client only.
    let refresh = tokens.refresh_token().expect("refresh").clone();
    let as_access = openidconnect::AccessToken::new(refresh.secret().clone());
    assert!(introspect(&rp, &as_access).await.active());
    assert!(!introspect(&other_rp, &as_access).await.active());

    // Another client cannot revoke it: ignored with the same answer.
    revoke(&s, (&other, &other_secret), refresh.secret()).await;
    assert!(introspect(&rp, &as_access).await.active());
    // Its own client revokes the access token: inactive at once, the refresh token lives on.
    revoke(&s, (&id, &secret), access.secret()).await;
    assert!(!introspect(&rp, &access).await.active());
    assert!(introspect(&rp, &as_access).await.active());
    // Revoking the refresh token ends the grant.
    revoke(&s, (&id, &secret), refresh.secret()).await;
    assert!(!introspect(&rp, &as_access).await.active());

    // A new sign-in; the person signs out everywhere: everything inactive at once.
    let tokens = library_sign_in(&s, &rp, "ada@example.com").await;
    assert!(introspect(&rp, tokens.access_token()).await.active());
    let cookie = s.login("ada@example.com").await;
    assert_eq!(s.post_as("/v1/logout-all", &cookie).await.status(), StatusCode::NO_CONTENT);
    assert!(!introspect(&rp, tokens.access_token()).await.active());
    let refresh = openidconnect::AccessToken::new(tokens.refresh_token().expect("refresh").secret().clone());
    assert!(!introspect(&rp, &refresh).await.active());
    // Made-up tokens are simply inactive; a public client may not introspect; no client is 401.
    assert!(!introspect(&rp, &openidconnect::AccessToken::new("nonsense".into())).await.active());
    let (public, _) = app(&s, OidcClientSpec { public: true, ..Default::default() }).await;
    let res = s.post("/oauth2/introspect").form(&[("token", "x"), ("client_id", public.as_str())]).send();
    oauth_error(res.await.expect("send"), StatusCode::BAD_REQUEST, "unauthorized_client").await;
    let res = s.post("/oauth2/introspect").form(&[("token", "x")]).send();
    oauth_error(res.await.expect("send"), StatusCode::UNAUTHORIZED, "invalid_client").await;
}

/// A small HTTP server standing for an application's back-channel logout endpoint: it keeps
/// every `logout_token` posted to it, and answers `500` to the first `fail_first` posts.
struct Receiver {
    uri: String,
    tokens: tokio::sync::mpsc::UnboundedReceiver<String>,
    attempts: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    _task: tokio::task::JoinHandle<()>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self._task.abort();
    }
}

async fn receiver(fail_first: usize) -> Receiver {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let (tx, tokens) = tokio::sync::mpsc::unbounded_channel();
    let attempts = std::sync::Arc::new(AtomicUsize::new(0));
    let counted = std::sync::Arc::clone(&attempts);
    let app = axum::Router::new().route(
        "/backchannel",
        axum::routing::post(move |axum::Form(form): axum::Form<std::collections::HashMap<String, String>>| {
            let (tx, counted) = (tx.clone(), std::sync::Arc::clone(&counted));
            async move {
                if counted.fetch_add(1, Ordering::SeqCst) < fail_first {
                    return axum::http::StatusCode::INTERNAL_SERVER_ERROR;
                }
                let _ = tx.send(form.get("logout_token").cloned().unwrap_or_default());
                axum::http::StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let uri = format!("http://{}/backchannel", listener.local_addr().expect("addr"));
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Receiver { uri, tokens, attempts, _task: task }
}

impl Receiver {
    /// The next logout token, waiting for its delivery (at most ten seconds).
    async fn next(&mut self) -> String {
        tokio::time::timeout(std::time::Duration::from_secs(10), self.tokens.recv())
            .await
            .expect("a logout token arrives")
            .expect("receiver open")
    }

    /// No further token within a short while (for the cases that must send none).
    fn none_yet(&mut self) -> bool {
        self.tokens.try_recv().is_err()
    }
}

/// Verifies a logout token as an application would (the `jsonwebtoken` crate, the JWKS) and
/// returns its claims.
async fn logout_claims(s: &TestServer, client_id: &str, token: &str) -> Value {
    let jwks: jsonwebtoken::jwk::JwkSet =
        s.get("/.well-known/jwks.json").send().await.expect("send").json().await.expect("jwks");
    let header = jsonwebtoken::decode_header(token).expect("header");
    assert_eq!(header.typ.as_deref(), Some("logout+jwt"));
    assert_eq!(header.alg, jsonwebtoken::Algorithm::RS256);
    let jwk = jwks.find(header.kid.as_deref().expect("kid")).expect("kid in the JWKS");
    let key = jsonwebtoken::DecodingKey::from_jwk(jwk).expect("key");
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    validation.set_issuer(&[s.base.as_str()]);
    validation.set_audience(&[client_id]);
    validation.set_required_spec_claims(&["iss", "aud", "exp", "iat", "sub"]);
    let claims = jsonwebtoken::decode::<Value>(token, &key, &validation).expect("the logout token verifies").claims;
    assert!(claims["events"][portcullis_service::BACKCHANNEL_LOGOUT_EVENT].is_object(), "{claims}");
    assert!(claims.get("nonce").is_none(), "{claims}");
    assert!(claims["jti"].is_string(), "{claims}");
    claims
}

/// An application with a back-channel logout URI (and a post-logout redirect URI).
async fn logout_app(s: &TestServer, backchannel: &str) -> (String, String) {
    let (id, secret) = app(
        s,
        OidcClientSpec {
            backchannel_logout_uri: Some(backchannel.into()),
            post_logout_redirect_uris: vec!["http://127.0.0.1:9/bye".into()],
            ..Default::default()
        },
    )
    .await;
    (id, secret.expect("secret"))
}

fn id_token_claims(tokens: &Value) -> Value {
    let id_token = tokens["id_token"].as_str().expect("id token");
    serde_json::from_slice(&base64url(id_token.split('.').nth(1).expect("payload"))).expect("claims")
}

#[tokio::test]
async fn back_channel_logout_reaches_applications_whenever_the_session_ends() {
    let s = server().await;
    s.register("ada@example.com").await;
    let mut live = receiver(1).await;
    let (id, secret) = logout_app(&s, &live.uri).await;
    // An application whose endpoint is dead (nothing listens there) is signed in as well.
    let dead = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let dead_uri = format!("http://{}/gone", dead.local_addr().expect("addr"));
    drop(dead);
    let (dead_id, dead_secret) = logout_app(&s, &dead_uri).await;

    // 1. Signing out of Portcullis in the browser.
    let (browser, tokens) = signed_in_app(&s, &id, &secret, "openid offline_access").await;
    let sid = id_token_claims(&tokens)["sid"].as_str().expect("sid").to_owned();
    let sub = id_token_claims(&tokens)["sub"].as_str().expect("sub").to_owned();
    let code = {
        let q = format!("response_type=code&client_id={dead_id}&redirect_uri={REDIRECT}&scope=openid");
        let res = browser.get(s.url(&format!("/oauth2/authorize?{q}"))).send().await.expect("send");
        param(&location(&res), "code").expect("a code for the dead application")
    };
    let form = [("grant_type", "authorization_code"), ("code", code.as_str()), ("redirect_uri", REDIRECT)];
    assert_eq!(token(&s, &dead_id, &dead_secret, &form).await.status(), StatusCode::OK);
    let res = browser.post(s.url("/v1/logout")).send().await.expect("logout");
    assert_eq!(res.status(), StatusCode::NO_CONTENT, "a dead application does not hold up the logout");
    let claims = logout_claims(&s, &id, &live.next().await).await;
    assert_eq!((claims["sid"].as_str(), claims["sub"].as_str()), (Some(sid.as_str()), Some(sub.as_str())));
    assert!(live.attempts.load(std::sync::atomic::Ordering::SeqCst) >= 2, "refused once, then retried");
    grant_is_over(&s, &id, &secret, &tokens).await;

    // 2. Refresh-token reuse.
    let (_, tokens) = signed_in_app(&s, &id, &secret, "openid offline_access").await;
    let refresh = tokens["refresh_token"].as_str().expect("refresh");
    let form = [("grant_type", "refresh_token"), ("refresh_token", refresh)];
    assert_eq!(token(&s, &id, &secret, &form).await.status(), StatusCode::OK);
    s.advance(std::time::Duration::from_secs(30));
    token_error(&s, &id, &secret, &form, StatusCode::BAD_REQUEST, "invalid_grant").await;
    let claims = logout_claims(&s, &id, &live.next().await).await;
    assert_eq!(claims["sid"], id_token_claims(&tokens)["sid"]);

    // 3. "Sign out everywhere", 4. a password change, 5. an administrator's force-logout.
    let (admin, admin_cookie) = s.user("root@example.com").await;
    s.make_admin(&admin).await;
    let ada = user_id(&s, "ada@example.com").await.to_string();
    for (what, end) in [("logout-all", 0), ("password change", 1), ("force logout", 2)] {
        let (_, tokens) = signed_in_app(&s, &id, &secret, "openid").await;
        let cookie = s.login("ada@example.com").await;
        let res = match end {
            0 => s.post_as("/v1/logout-all", &cookie).await,
            1 => {
                let body = json!({"current_password": PASSWORD, "new_password": PASSWORD});
                s.send_as(Method::POST, "/v1/password", &cookie, &body).await
            }
            _ => s.post_as(&format!("/v1/admin/users/{ada}/logout"), &admin_cookie).await,
        };
        assert!(res.status().is_success(), "{what}: {}", res.status());
        let claims = logout_claims(&s, &id, &live.next().await).await;
        assert_eq!(claims["sid"], id_token_claims(&tokens)["sid"], "{what}");
    }
    assert!(live.none_yet(), "one notice per ended grant");
}

#[tokio::test]
async fn rp_initiated_logout_signs_out_with_a_hint_and_asks_without_one() {
    let s = server().await;
    s.register("ada@example.com").await;
    let mut live = receiver(0).await;
    let (id, secret) = logout_app(&s, &live.uri).await;
    let (browser, tokens) = signed_in_app(&s, &id, &secret, "openid").await;
    let hint = tokens["id_token"].as_str().expect("id token").to_owned();
    let logout = |q: Vec<(&str, &str)>| {
        let q = url::form_urlencoded::Serializer::new(String::new()).extend_pairs(q).finish();
        s.url(&format!("/oauth2/logout?{q}"))
    };
    // An unregistered post-logout URI, a made-up hint, and a hint from elsewhere: pages, no
    // redirect, nobody signed out.
    for (q, code) in [
        (
            vec![("id_token_hint", hint.as_str()), ("post_logout_redirect_uri", "https://evil.example/")],
            "is not registered",
        ),
        (vec![("post_logout_redirect_uri", "http://127.0.0.1:9/bye")], "is not registered"),
        (vec![("id_token_hint", "eyJhbGciOiJub25lIn0.e30.")], "not an ID token from here"),
        (vec![("id_token_hint", hint.as_str()), ("client_id", "someone-else")], "not the audience"),
    ] {
        let res = browser.get(logout(q)).send().await.expect("send");
        assert_eq!(res.status(), StatusCode::BAD_REQUEST, "{code}");
        assert!(res.headers().get("location").is_none());
        assert!(res.text().await.expect("page").contains(code), "{code}");
    }
    assert_eq!(browser.get(s.url("/v1/me")).send().await.expect("send").status(), StatusCode::OK);
    // Without a hint: the person is asked, and a forged confirmation does nothing.
    let res = browser.get(logout(vec![("client_id", &id)])).send().await.expect("send");
    let page = res.text().await.expect("page");
    assert!(page.contains("Sign out?") && page.contains("Grafana"), "{page}");
    let res = browser.post(s.url("/oauth2/logout")).form(&[("client_id", id.as_str()), ("csrf", "forged")]).send();
    assert!(res.await.expect("send").text().await.expect("page").contains("Sign out?"));
    assert_eq!(browser.get(s.url("/v1/me")).send().await.expect("send").status(), StatusCode::OK);
    // With the hint of this session: signed out at once, back to the application with its state.
    let res = browser
        .get(logout(vec![
            ("id_token_hint", &hint),
            ("post_logout_redirect_uri", "http://127.0.0.1:9/bye"),
            ("state", "s-9"),
        ]))
        .send()
        .await
        .expect("send");
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&res), "http://127.0.0.1:9/bye?state=s-9");
    assert_eq!(browser.get(s.url("/v1/me")).send().await.expect("send").status(), StatusCode::UNAUTHORIZED);
    let claims = logout_claims(&s, &id, &live.next().await).await;
    assert_eq!(claims["sid"], id_token_claims(&tokens)["sid"]);
    // The confirmed form works too, for a session signed in again.
    let (browser, _) = signed_in_app(&s, &id, &secret, "openid").await;
    let page = browser.get(logout(vec![])).send().await.expect("send").text().await.expect("page");
    let csrf = page.split("name=\"csrf\" value=\"").nth(1).and_then(|r| r.split('"').next()).expect("csrf").to_owned();
    let res = browser.post(s.url("/oauth2/logout")).form(&[("csrf", csrf.as_str())]).send().await.expect("send");
    assert!(res.text().await.expect("page").contains("You are signed out"));
    assert_eq!(browser.get(s.url("/v1/me")).send().await.expect("send").status(), StatusCode::UNAUTHORIZED);
    live.next().await;
}

#[tokio::test]
async fn the_account_page_lists_applications_and_removes_their_access() {
    let s = server().await;
    s.register("ada@example.com").await;
    let mut live = receiver(0).await;
    let (id, secret) = logout_app(&s, &live.uri).await;
    let (browser, tokens) = signed_in_app(&s, &id, &secret, "openid email offline_access").await;
    let page = browser.get(s.url("/account")).send().await.expect("send").text().await.expect("page");
    assert!(page.contains("Applications") && page.contains("Grafana"), "{page}");
    assert!(page.contains(&format!("/account/applications/{id}/revoke")), "{page}");
    // The application's sign-in is not listed as a device; the API marks it with its client.
    let sessions: Value = browser.get(s.url("/v1/sessions")).send().await.expect("send").json().await.expect("json");
    let listed = sessions["sessions"].as_array().expect("sessions");
    assert_eq!(listed.iter().filter(|s| s["client_id"] == json!(id)).count(), 1, "{sessions}");
    let csrf = page.split("name=\"csrf\" value=\"").nth(1).and_then(|r| r.split('"').next()).expect("csrf").to_owned();
    // A forged form removes nothing.
    let url = s.url(&format!("/account/applications/{id}/revoke"));
    let res = browser.post(&url).form(&[("csrf", "forged")]).send().await.expect("send");
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    let access = tokens["access_token"].as_str().expect("access");
    assert_eq!(s.bearer(Method::GET, "/oauth2/userinfo", access).send().await.expect("send").status(), StatusCode::OK);
    let res = browser.post(&url).form(&[("csrf", csrf.as_str())]).send().await.expect("send");
    assert_eq!(location(&res), "/account?done=revoked");
    grant_is_over(&s, &id, &secret, &tokens).await;
    logout_claims(&s, &id, &live.next().await).await;
    // The browser session itself stays; the application is gone from the page.
    let page = browser.get(s.url("/account?done=revoked")).send().await.expect("send").text().await.expect("page");
    assert!(!page.contains("Grafana") && page.contains("no longer has access"), "{page}");
    let res = browser.post(&url).form(&[("csrf", csrf.as_str())]).send().await.expect("send");
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
}

/// The sign-in page for an application lets its form's answer go on to the application's
/// registered redirect URI (the page's `form-action`), and to no other origin a request names.
#[tokio::test]
async fn the_sign_in_page_admits_only_the_registered_redirect_origin() {
    let s = server().await;
    let (id, _) = confidential(&s).await;
    let csp_for = |redirect: &str| {
        let authorize =
            format!("/oauth2/authorize?response_type=code&client_id={id}&redirect_uri={redirect}&scope=openid");
        let q = url::form_urlencoded::Serializer::new(String::new()).append_pair("return_to", &authorize).finish();
        let url = s.url(&format!("/login?{q}"));
        async move {
            let res = browser().get(url).send().await.expect("send");
            res.headers().get("content-security-policy").and_then(|v| v.to_str().ok()).expect("csp").to_owned()
        }
    };
    assert!(csp_for(REDIRECT).await.contains("form-action 'self' http://127.0.0.1:9"));
    let evil = csp_for("https://evil.example/cb").await;
    assert!(!evil.contains("evil.example"), "{evil}");
    let plain = browser().get(s.url("/login")).send().await.expect("send");
    let csp = plain.headers().get("content-security-policy").and_then(|v| v.to_str().ok()).expect("csp");
    assert!(!csp.contains("127.0.0.1:9"), "{csp}");
}

#[tokio::test]
async fn administrators_register_applications_on_the_admin_page() {
    let s = server().await;
    let (admin, cookie) = s.user("root@example.com").await;
    s.make_admin(&admin).await;
    let page = s.get_as("/admin", &cookie).await.text().await.expect("page");
    assert!(page.contains("Register an application"), "{page}");
    let csrf = page.split("name=\"csrf\" value=\"").nth(1).and_then(|r| r.split('"').next()).expect("csrf").to_owned();
    let post = |form: Vec<(&'static str, String)>| {
        let (s, cookie) = (&s, cookie.clone());
        async move { s.post("/admin/clients").header("cookie", cookie).form(&form).send().await.expect("send") }
    };
    let res = post(vec![
        ("csrf", csrf.clone()),
        ("name", "Wiki".into()),
        ("redirect_uris", format!("{REDIRECT}\r\n")),
        ("backchannel_logout_uri", String::new()),
    ])
    .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let page = res.text().await.expect("page");
    let grab =
        |id: &str| page.split(&format!("id=\"{id}\">")).nth(1).and_then(|r| r.split('<').next()).map(str::to_owned);
    let (id, secret) = (grab("client-id").expect("client id"), grab("client-secret").expect("secret"));
    // The secret works at the token endpoint at once, and the application signs people in.
    assert_eq!(token(&s, &id, &secret, &[("grant_type", "client_credentials")]).await.status(), StatusCode::OK);
    s.register("ada@example.com").await;
    signed_in_app(&s, &id, &secret, "openid").await;
    // Bad input: the page says why, nothing is registered; a forged form is refused.
    let res =
        post(vec![("csrf", csrf.clone()), ("name", "Bad".into()), ("redirect_uris", "http://example.com/cb".into())])
            .await;
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    assert!(res.text().await.expect("page").contains("https"));
    let res = post(vec![("csrf", "forged".into()), ("name", "X".into()), ("redirect_uris", REDIRECT.into())]).await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    assert_eq!(s.service.clients().await.expect("clients").len(), 1);
}

/// A person with a second factor signs in to an application: the sign-in goes through
/// `/login/mfa` (which names the application and lets its answer go on to it), and the ID token
/// says both methods were used.
#[tokio::test]
async fn an_application_sees_the_second_factor_in_the_id_tokens_amr() {
    let s = server().await;
    s.register("ada@example.com").await;
    let cookie = s.login("ada@example.com").await;
    let enrolment: Value = s.post_as("/v1/mfa/totp", &cookie).await.json().await.expect("json");
    let app_totp = totp_rs::TOTP::from_url_unchecked(enrolment["otpauth_uri"].as_str().expect("uri")).expect("app");
    let now = || u64::try_from(portcullis_core::Clock::now(&s.clock).unix_seconds()).expect("time");
    let body = json!({"code": app_totp.generate(now())});
    let confirm = s.send_as(Method::POST, "/v1/mfa/totp/confirm", &cookie, &body).await;
    assert_eq!(confirm.status(), StatusCode::OK);
    s.advance(std::time::Duration::from_secs(30));

    let (id, secret) = confidential(&s).await;
    let q = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("response_type", "code")
        .append_pair("client_id", &id)
        .append_pair("redirect_uri", REDIRECT)
        .append_pair("scope", "openid")
        .append_pair("state", "st")
        .finish();
    let browser = browser();
    let res = browser.get(s.url(&format!("/oauth2/authorize?{q}"))).send().await.expect("send");
    let to_login = location(&res);
    let return_to = param(&s.url(&to_login), "return_to").expect("the sign-in comes back");
    let form = [("email", "ada@example.com"), ("password", PASSWORD), ("return_to", return_to.as_str())];
    let res = browser.post(s.url("/login")).form(&form).send().await.expect("sign in");
    let second = location(&res);
    assert!(second.starts_with("/login/mfa?return_to="), "{second}");
    let page = browser.get(s.url(&second)).send().await.expect("send");
    let csp = page.headers().get("content-security-policy").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    assert!(csp.contains("form-action 'self' http://127.0.0.1:9"), "the answer may go on to the app: {csp}");
    assert!(page.text().await.expect("html").contains("to continue to"), "the second step names the application");
    let code = app_totp.generate(now());
    let res = browser
        .post(s.url("/login/mfa"))
        .form(&[("code", code.as_str()), ("return_to", return_to.as_str())])
        .send()
        .await
        .expect("send");
    let back = browse(&s, &browser, &s.url(&location(&res)), "ada@example.com").await;
    let code = param(&back, "code").expect("a code");
    let form = [("grant_type", "authorization_code"), ("code", &code), ("redirect_uri", REDIRECT)];
    let tokens: Value = token(&s, &id, &secret, &form).await.json().await.expect("json");
    assert_eq!(id_token_claims(&tokens)["amr"], json!(["pwd", "otp", "mfa"]));
}
