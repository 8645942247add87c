//! The `portcullis` binary: `serve`, the `user` and `keys` commands, and `lab`.
//!
//! This crate only composes: the service core (`portcullis-service`) holds every rule, the
//! server library (`portcullis-server`) serves it over HTTP, and the commands call the same
//! service operations as the API; the lab (`portcullis-lab`) starts real Redis, PostgreSQL and nginx processes for
//! `portcullis lab`. Neither library depends on the other, and the production server library
//! links no process harness. Its tests run the binary itself (`tests/it/`: `cli.rs`, `lab.rs`, and `architecture.rs`, the import-circle check over every crate).

mod lab_service;

use std::io::{BufRead, IsTerminal};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Args, Parser, Subcommand};
use portcullis_core::jwt::Algorithm;
use portcullis_core::{ClientInfo, ClientKind};
use portcullis_core::{Clock, PasswordHasher, SystemClock};
use portcullis_server::Creation;
use portcullis_server::settings::{Overrides, Settings};
use portcullis_server::{Server, open_stores};
use portcullis_service::{Actor, Creator, KeyStatus, Purpose, Quiet, Service, key_status};

/// The allocator the server runs on: mimalloc. A request allocates a few dozen small blocks, and
/// glibc's malloc and free were about a third of a request's instructions (docs/BENCHMARKS.md,
/// "What changed").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "portcullis", version, about = "Sessions and JWTs, both done properly.")]
struct Cli {
    #[command(flatten)]
    common: Common,
    #[command(subcommand)]
    command: Command,
}

#[derive(Args)]
struct Common {
    /// TOML settings file (optional; without it, defaults and PORTCULLIS_* variables apply).
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Directory for the embedded database (overrides data_dir).
    #[arg(long, global = true, value_name = "DIR")]
    data_dir: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server.
    Serve {
        /// Address to listen on (overrides listen).
        #[arg(long, value_name = "ADDR")]
        listen: Option<SocketAddr>,
    },
    /// Manage users.
    #[command(subcommand)]
    User(UserCommand),
    /// Manage the JWT signing keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Manage the client registry: services that follow the revocation feed.
    #[command(subcommand)]
    Client(ClientCommand),
    /// Start N nodes, Redis, PostgreSQL and nginx on loopback and measure the claims made about
    /// sessions and JWTs; print a table and optionally write a markdown report.
    Lab {
        /// Portcullis nodes behind the balancer in the cluster scenarios (2 to 16: the claims
        /// are about requests landing on another node, so one node cannot show them).
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(2..=16))]
        nodes: u64,
        /// Write the report (markdown) here.
        #[arg(long, value_name = "FILE")]
        report: Option<PathBuf>,
        /// Length of each load measurement, in seconds (1 to 300).
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=300))]
        load_seconds: u64,
        /// Logouts timed for each revocation-propagation figure (1 to 10000).
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u64).range(1..=10_000))]
        samples: u64,
        /// Services in the chain a user request fans out to in the microservice scenarios
        /// (1 to 8, each its own process).
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=8))]
        services: u64,
    },
    /// One service of the lab's microservice chain (started by `portcullis lab`).
    #[command(hide = true)]
    LabService(lab_service::LabServiceArgs),
}

#[derive(Subcommand)]
enum KeysCommand {
    /// List signing keys: the one signing now, those still published until their tokens expire,
    /// and retired ones.
    List,
    /// Make a new signing key; it signs from now on (running servers pick it up within
    /// seconds) and the old one stays published until every token it signed has expired.
    Rotate {
        /// EdDSA, ES256, RS256 or HS256; defaults to jwt.algorithm.
        #[arg(long, value_name = "ALG")]
        algorithm: Option<String>,
    },
}

#[derive(Subcommand)]
enum ClientCommand {
    /// Register a client; its id and secret are printed once (the secret is stored hashed).
    Add {
        /// A name people recognise it by (1 to 100 characters).
        name: String,
        /// A service: it verifies access tokens itself and reads the revocation feed with its
        /// id and secret (HTTP Basic).
        #[arg(long, conflicts_with_all = ["redirect_uri", "public", "post_logout_redirect_uri", "backchannel_logout_uri", "third_party"])]
        service: bool,
        /// An OpenID Connect application: where sign-in answers may be sent (exact match;
        /// repeat for several).
        #[arg(long = "redirect-uri", value_name = "URI")]
        redirect_uri: Vec<String>,
        /// A public application (browser or mobile): no secret, PKCE required.
        #[arg(long)]
        public: bool,
        /// Where RP-initiated logout may send people back (repeat for several).
        #[arg(long = "post-logout-redirect-uri", value_name = "URI")]
        post_logout_redirect_uri: Vec<String>,
        /// Where back-channel logout tokens are posted.
        #[arg(long = "backchannel-logout-uri", value_name = "URI")]
        backchannel_logout_uri: Option<String>,
        /// Ask people for consent before the application gets their identity (applications
        /// are first-party, without consent, by default).
        #[arg(long = "third-party")]
        third_party: bool,
        /// Print `{"client_id","client_secret","client"}`.
        #[arg(long)]
        json: bool,
    },
    /// List clients (never their secrets).
    List {
        #[arg(long)]
        json: bool,
    },
    /// Remove a client: its credentials stop working at once.
    Remove { client_id: String },
    /// Give a client a new secret, printed once; the old one keeps working for the overlap.
    RotateSecret {
        client_id: String,
        /// How long the old secret keeps working (default: clients.secret_overlap, 24h).
        #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
        overlap: Option<std::time::Duration>,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum UserCommand {
    /// Create a user. Without --password-stdin the password is asked for on the terminal.
    Add {
        email: String,
        /// An extra role (repeatable); every user has `user`.
        #[arg(long = "role", value_name = "ROLE")]
        roles: Vec<String>,
        /// Read the password from the first line of standard input.
        #[arg(long)]
        password_stdin: bool,
    },
    /// List users in aligned columns (or as JSON, the admin API's shape).
    List {
        /// Print `{"users": [...]}` as the admin API does.
        #[arg(long)]
        json: bool,
    },
    /// Set a user's password (for an operator whose admin is locked out); ends every session
    /// and token of the user. Without --password-stdin it is asked for on the terminal.
    SetPassword {
        email: String,
        /// Read the password from the first line of standard input.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Disable a user: they cannot sign in, and every session and token of theirs ends.
    Disable { email: String },
    /// Enable a disabled user again.
    Enable { email: String },
    /// Give a user a role (`admin`, or any other name).
    Grant { email: String, role: String },
    /// Take a role away from a user; their access tokens issued with it end at once.
    Revoke { email: String, role: String },
    /// End every session and token of a user (force logout).
    Logout { email: String },
    /// Delete a user: their sessions and tokens end, the account goes, the email is free again.
    Delete { email: String },
    /// Remove every second factor of a user who lost them (authenticator app, recovery codes);
    /// every session and token of the user ends. They sign in with their password alone next.
    ResetMfa { email: String },
    /// Mark a user's email address as verified, as if they had followed the link sent to it
    /// (for `registration.verify_email`).
    VerifyEmail { email: String },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        // Colours only for people: logs sent to files and collectors stay plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<(), String> {
    let cli = match cli {
        // Knows Portcullis only by URL, as any other service: no settings of its own.
        Cli { command: Command::LabService(args), .. } => return lab_service::run(args).await,
        cli => cli,
    };
    let listen = match &cli.command {
        Command::Serve { listen } => *listen,
        Command::User(_) | Command::Keys(_) | Command::Client(_) | Command::Lab { .. } | Command::LabService(_) => None,
    };
    let overrides = Overrides { listen, data_dir: cli.common.data_dir.clone() };
    let settings = Settings::load(cli.common.config.as_deref(), &overrides).map_err(|e| e.to_string())?;
    match cli.command {
        Command::Serve { .. } => serve(settings).await,
        Command::User(UserCommand::Add { email, roles, password_stdin }) => {
            user_add(settings, &email, &roles, password_stdin).await
        }
        Command::User(UserCommand::List { json }) => user_list(settings, json).await,
        Command::User(command) => user_change(settings, command).await,
        Command::Keys(KeysCommand::List) => keys_list(settings).await,
        Command::Keys(KeysCommand::Rotate { algorithm }) => keys_rotate(settings, algorithm.as_deref()).await,
        Command::Client(command) => client_command(settings, command).await,
        Command::Lab { nodes, report, load_seconds, samples, services } => {
            lab(nodes, report, load_seconds, samples, services).await
        }
        // Served above, before any settings are read.
        Command::LabService(_) => Ok(()),
    }
}

async fn serve(settings: Settings) -> Result<(), String> {
    let stores = settings.describe_stores();
    let server = Server::bind(settings, Arc::new(SystemClock)).await.map_err(|e| e.to_string())?;
    let addr = server.local_addr().map_err(|e| e.to_string())?;
    println!("portcullis listening on http://{addr} (public URL {}, {stores})", server.public_url());
    server.run(shutdown_signal()).await.map_err(|e| e.to_string())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutting down");
}

/// The service the commands run, with the same rules as the API (and a one-worker hashing pool).
async fn offline_service(settings: &Settings) -> Result<Service, String> {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let stores =
        open_stores(settings, Arc::clone(&clock), None, Creation::Existing).await.map_err(|e| e.to_string())?;
    let hasher = PasswordHasher::new(1, 1).map_err(|e| e.to_string())?;
    let public_url = settings.public_url_or(settings.listen).map_err(|e| e.to_string())?;
    let config = settings.service_config(&public_url).map_err(|e| e.to_string())?;
    Service::open(config, &stores, clock, hasher, Arc::new(Quiet), Purpose::Command).await.map_err(|e| e.to_string())
}

fn read_password(from_stdin: bool) -> Result<String, String> {
    if from_stdin {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line).map_err(|e| format!("cannot read the password: {e}"))?;
        // Only the line ending is removed: spaces are part of the password.
        let pw = line.strip_suffix('\n').unwrap_or(&line);
        return Ok(pw.strip_suffix('\r').unwrap_or(pw).to_owned());
    }
    if !std::io::stdin().is_terminal() {
        return Err("no terminal to ask for the password on; pass --password-stdin".into());
    }
    let first = rpassword::prompt_password("Password: ").map_err(|e| e.to_string())?;
    let again = rpassword::prompt_password("Password again: ").map_err(|e| e.to_string())?;
    if first != again {
        return Err("the passwords do not match".into());
    }
    Ok(first)
}

async fn user_add(settings: Settings, email: &str, roles: &[String], password_stdin: bool) -> Result<(), String> {
    let password = read_password(password_stdin)?;
    let service = offline_service(&settings).await?;
    let user = service
        .create_account(email, password, roles, Creator::Cli, &Default::default())
        .await
        .map_err(|e| e.to_string())?;
    println!("created user {} <{}> roles={}", user.id, user.email, user.roles_joined());
    Ok(())
}

async fn user_list(settings: Settings, json: bool) -> Result<(), String> {
    let service = offline_service(&settings).await?;
    let users = service.list_users().await.map_err(|e| e.to_string())?;
    if json {
        let body = serde_json::json!({ "users": users });
        println!("{}", serde_json::to_string_pretty(&body).map_err(|e| e.to_string())?);
        return Ok(());
    }
    let rows: Vec<[String; 5]> = users
        .iter()
        .map(|u| {
            let status = if u.disabled { "disabled" } else { "active" };
            [u.id.to_string(), u.email.to_string(), u.roles_joined(), status.to_owned(), u.created_at.to_string()]
        })
        .collect();
    print!("{}", columns(["ID", "EMAIL", "ROLES", "STATUS", "CREATED"], &rows));
    Ok(())
}

/// Rows under a header, each column as wide as its widest cell, two spaces apart.
fn columns<const N: usize>(header: [&str; N], rows: &[[String; N]]) -> String {
    let mut widths = header.map(|h| h.chars().count());
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: [&str; N]| {
        let mut out = String::new();
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
            if i + 1 == N {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<w$}  "));
            }
        }
        out.push('\n');
        out
    };
    let mut out = line(header);
    for row in rows {
        out.push_str(&line(std::array::from_fn(|i| row[i].as_str())));
    }
    out
}

/// The user commands that change an account, each through the same audited operation as the
/// admin API (recorded with the actor `cli`).
async fn user_change(settings: Settings, command: UserCommand) -> Result<(), String> {
    let password = match &command {
        UserCommand::SetPassword { password_stdin, .. } => Some(read_password(*password_stdin)?),
        _ => None,
    };
    let service = offline_service(&settings).await?;
    let err = |e: portcullis_service::AuthError| e.to_string();
    let find = |email: String| {
        let service = service.clone();
        async move {
            service.user_by_email(&email).await.map_err(|e| match e {
                portcullis_service::AuthError::UserNotFound => format!("no user with the email {email:?}"),
                e => e.to_string(),
            })
        }
    };
    let cli = Actor::Cli;
    let none = ClientInfo::default();
    match command {
        UserCommand::SetPassword { email, .. } => {
            let user = find(email).await?;
            let ended =
                service.set_password(cli, user.id.as_str(), password.unwrap_or_default(), &none).await.map_err(err)?;
            println!("password set for {} ({ended} sessions ended)", user.email);
        }
        UserCommand::Disable { email } => {
            let user = find(email).await?;
            service.update_user(cli, user.id.as_str(), None, Some(true), &none).await.map_err(err)?;
            println!("disabled {} (every session ended)", user.email);
        }
        UserCommand::Enable { email } => {
            let user = find(email).await?;
            service.update_user(cli, user.id.as_str(), None, Some(false), &none).await.map_err(err)?;
            println!("enabled {}", user.email);
        }
        UserCommand::Grant { email, role } => {
            let user = find(email).await?;
            let mut roles: Vec<String> = user.roles.iter().map(ToString::to_string).collect();
            roles.push(role);
            let user = service.update_user(cli, user.id.as_str(), Some(roles), None, &none).await.map_err(err)?;
            println!("{} has roles {}", user.email, user.roles_joined());
        }
        UserCommand::Revoke { email, role } => {
            let user = find(email).await?;
            if role == "user" {
                return Err("every user has the role `user`; disable the user instead".into());
            }
            let roles: Vec<String> = user.roles.iter().map(ToString::to_string).filter(|r| *r != role).collect();
            let user = service.update_user(cli, user.id.as_str(), Some(roles), None, &none).await.map_err(err)?;
            println!("{} has roles {}", user.email, user.roles_joined());
        }
        UserCommand::Logout { email } => {
            let user = find(email).await?;
            let ended = service.force_logout(cli, user.id.as_str(), &none).await.map_err(err)?;
            println!("signed {} out everywhere ({ended} sessions ended)", user.email);
        }
        UserCommand::Delete { email } => {
            let user = find(email).await?;
            service.delete_user(cli, user.id.as_str(), &none).await.map_err(err)?;
            println!("deleted {} ({})", user.email, user.id);
        }
        UserCommand::ResetMfa { email } => {
            let user = find(email).await?;
            let had = service.reset_mfa(cli, user.id.as_str(), &none).await.map_err(err)?;
            let what = if had { "second factors removed" } else { "had no second factor" };
            println!("{}: {what}; signed out everywhere", user.email);
        }
        UserCommand::VerifyEmail { email } => {
            let user = find(email).await?;
            let user = service.confirm_email(cli, user.id.as_str(), &none).await.map_err(err)?;
            println!("{}: email address verified", user.email);
        }
        UserCommand::Add { .. } | UserCommand::List { .. } => {}
    }
    // Applications signed in through ended sessions hear of it before the command exits.
    portcullis_server::deliver_queued_logouts(&service).await;
    Ok(())
}

/// The client commands, through the same audited operations as the admin API.
async fn client_command(settings: Settings, command: ClientCommand) -> Result<(), String> {
    let overlap_default = settings.clients.secret_overlap;
    let service = offline_service(&settings).await?;
    let none = ClientInfo::default();
    let err = |e: portcullis_service::AuthError| e.to_string();
    let print_json = |value: serde_json::Value| -> Result<(), String> {
        println!("{}", serde_json::to_string_pretty(&value).map_err(|e| e.to_string())?);
        Ok(())
    };
    match command {
        ClientCommand::Add {
            name,
            service: is_service,
            redirect_uri,
            public,
            post_logout_redirect_uri,
            backchannel_logout_uri,
            third_party,
            json,
        } => {
            let registered = if is_service {
                service.register_client(Actor::Cli, &name, ClientKind::Service, &none).await.map_err(err)?
            } else if redirect_uri.is_empty() {
                return Err(
                    "say what the client is: --service, or an OpenID Connect application with --redirect-uri URI"
                        .into(),
                );
            } else {
                let spec = portcullis_service::OidcClientSpec {
                    name,
                    public,
                    redirect_uris: redirect_uri,
                    post_logout_redirect_uris: post_logout_redirect_uri,
                    backchannel_logout_uri,
                    first_party: !third_party,
                };
                service.register_oidc_client(Actor::Cli, spec, &none).await.map_err(err)?
            };
            let secret = registered.secret.as_ref().map(|s| s.expose().to_owned());
            let client = registered.client;
            if json {
                return print_json(
                    serde_json::json!({"client_id": client.id, "client_secret": secret, "client": client}),
                );
            }
            println!("registered {} client {:?}", client.kind.as_str(), client.name);
            println!("client_id:     {}", client.id);
            match secret {
                Some(secret) => {
                    println!("client_secret: {secret}");
                    println!("(the secret is shown only now; it is stored hashed)");
                }
                None => println!("(a public client has no secret: it uses PKCE)"),
            }
        }
        ClientCommand::List { json } => {
            let clients = service.clients().await.map_err(err)?;
            if json {
                return print_json(serde_json::json!({ "clients": clients }));
            }
            let rows: Vec<[String; 5]> = clients
                .iter()
                .map(|c| {
                    let used = c.last_used_at.map_or_else(|| "never".to_owned(), |t| t.to_string());
                    [c.id.to_string(), c.kind.as_str().to_owned(), c.name.clone(), c.created_at.to_string(), used]
                })
                .collect();
            print!("{}", columns(["CLIENT_ID", "KIND", "NAME", "CREATED", "LAST USED"], &rows));
        }
        ClientCommand::Remove { client_id } => {
            let client = service.remove_client(Actor::Cli, &client_id, &none).await.map_err(|e| match e {
                portcullis_service::AuthError::ClientNotFound => format!("no client with the id {client_id:?}"),
                e => e.to_string(),
            })?;
            println!("removed {} client {} ({})", client.kind.as_str(), client.id, client.name);
        }
        ClientCommand::RotateSecret { client_id, overlap, json } => {
            let overlap = overlap.unwrap_or(overlap_default);
            let (client, secret) =
                service.rotate_client_secret(Actor::Cli, &client_id, overlap, &none).await.map_err(|e| match e {
                    portcullis_service::AuthError::ClientNotFound => format!("no client with the id {client_id:?}"),
                    e => e.to_string(),
                })?;
            if json {
                return print_json(
                    serde_json::json!({"client_id": client.id, "client_secret": secret.expose(), "client": client}),
                );
            }
            println!("client_id:     {}", client.id);
            println!("client_secret: {}", secret.expose());
            println!(
                "(shown only now; the old secret keeps working until {})",
                client.previous_until.map_or_else(|| "now".to_owned(), |t| t.to_string())
            );
        }
    }
    Ok(())
}

async fn keys_list(settings: Settings) -> Result<(), String> {
    let stores =
        open_stores(&settings, Arc::new(SystemClock), None, Creation::Existing).await.map_err(|e| e.to_string())?;
    let keys = stores.keys.signing_keys().await.map_err(|e| e.to_string())?;
    let now = SystemClock.now();
    println!("{:<43}  {:<6}  {:<24}  STATUS", "KID", "ALG", "CREATED");
    for k in keys {
        let status = match key_status(&k, now) {
            KeyStatus::Signing => "signing".to_owned(),
            KeyStatus::Retiring(at) => format!("published until {at}"),
            KeyStatus::Retired => "retired".to_owned(),
        };
        println!("{:<43}  {:<6}  {:<24}  {status}", k.kid, k.alg, k.created_at.to_string());
    }
    if settings.jwt.algorithm == Algorithm::HS256 && settings.jwt.secret.is_some() {
        println!("(jwt.secret is set: the HS256 key comes from the settings and is not stored)");
    }
    Ok(())
}

async fn keys_rotate(settings: Settings, algorithm: Option<&str>) -> Result<(), String> {
    let algorithm = match algorithm {
        Some(a) => {
            Algorithm::parse(a).ok_or_else(|| format!("unknown algorithm {a:?}; use EdDSA, ES256, RS256 or HS256"))?
        }
        None => settings.jwt.algorithm,
    };
    let service = offline_service(&settings).await?;
    let rotated = service.rotate_keys(algorithm, "cli").await.map_err(|e| e.to_string())?;
    // Running nodes re-read the keys within seconds anyway; with Redis they hear of it at once.
    if !rotated.announced {
        eprintln!("note: could not announce the new key; nodes will pick it up within seconds");
    }
    let kid = rotated.kid;
    println!("new {algorithm} signing key {kid}");
    if algorithm != settings.jwt.algorithm {
        eprintln!(
            "note: jwt.algorithm is {}; a server started with it will switch back to a {} key. Change jwt.algorithm to keep {algorithm}.",
            settings.jwt.algorithm, settings.jwt.algorithm
        );
    }
    Ok(())
}

async fn lab(
    nodes: u64,
    report: Option<PathBuf>,
    load_seconds: u64,
    samples: u64,
    services: u64,
) -> Result<(), String> {
    let portcullis = std::env::current_exe().map_err(|e| format!("cannot find the portcullis binary: {e}"))?;
    // clap bounded all three, so they fit.
    let opts = portcullis_lab::lab::LabOptions {
        portcullis,
        nodes: usize::try_from(nodes).unwrap_or(2),
        load: std::time::Duration::from_secs(load_seconds),
        samples: usize::try_from(samples).unwrap_or(1),
        services: usize::try_from(services).unwrap_or(1),
    };
    eprintln!(
        "measuring 11 claims with up to {nodes} nodes, {services} services, Redis, PostgreSQL and nginx \
         on loopback ({load_seconds} s per load measurement, {samples} logouts timed)..."
    );
    let started = std::time::Instant::now();
    let findings = portcullis_lab::lab::run(&opts).await.map_err(|e| e.to_string())?;
    print!("{}", portcullis_lab::lab::table(&findings));
    eprintln!("done in {:.0} s", started.elapsed().as_secs_f64());
    if let Some(path) = report {
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        let machine = format!("a {cores}-core machine");
        std::fs::write(&path, portcullis_lab::lab::markdown(&findings, &opts, &machine))
            .map_err(|e| format!("{}: {e}", path.display()))?;
        println!("report written to {}", path.display());
    }
    Ok(())
}
