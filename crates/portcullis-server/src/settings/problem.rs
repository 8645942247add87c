//! Settings problems as an operator reads them: one line each, naming the key, where it was set
//! (the file, or the environment variable itself), and for an unknown key the closest known one.

use figment::Figment;
use figment::error::Kind;
use figment::value::{Dict, Value};
use serde::{Deserialize, Deserializer};

/// Variables that Kubernetes (and Docker links) set for a Service or container named
/// `portcullis`: `PORTCULLIS_PORT=tcp://10.96.0.10:8080`, `PORTCULLIS_SERVICE_HOST`,
/// `PORTCULLIS_SERVICE_PORT[_NAME]`, `PORTCULLIS_PORT_8080_TCP[_ADDR|_PORT|_PROTO]`. They are
/// not settings and must not stop start-up. `key` is lower-case, without the prefix.
pub fn is_service_link(key: &str, value: &str) -> bool {
    let protocol = |p: &str| matches!(p, "tcp" | "udp" | "sctp");
    if key == "port" {
        return value.split_once("://").is_some_and(|(p, _)| protocol(&p.to_ascii_lowercase()));
    }
    if key == "service_host" || key == "service_port" || key.starts_with("service_port_") {
        return true;
    }
    let mut parts = key.split('_');
    parts.next() == Some("port")
        && parts.next().is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        && parts.next().is_some_and(protocol)
        && match (parts.next(), parts.next()) {
            (None, None) => true,
            (Some(field), None) => matches!(field, "addr" | "port" | "proto"),
            _ => false,
        }
}

/// Where the value at `path` came from: the file's path, or the environment variable.
fn whence(fig: &Figment, path: &[String], prefix: &str) -> Option<String> {
    let md = fig.find_metadata(&path.join("."))?;
    if let Some(file) = md.source.as_ref().and_then(|s| s.file_path()) {
        return Some(file.display().to_string());
    }
    md.name.contains("environment variable").then(|| format!("{prefix}{}", path.join("__").to_ascii_uppercase()))
}

/// The known name closest to `found`, if one is close enough to be a typo of it.
fn suggestion(found: &str, known: &[&str]) -> Option<String> {
    known
        .iter()
        .map(|k| (strsim::damerau_levenshtein(found, k), *k))
        .filter(|(d, k)| *d <= (k.len() / 3).max(1))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k.to_owned())
}

/// Every key in `fig` that is not a setting, each as one line with the closest known name, in
/// one pass (serde stops at the first). `known` holds every setting (defaults with every
/// optional one set).
pub fn unknown_keys(fig: &Figment, known: &Dict, prefix: &str) -> Vec<String> {
    fn walk(fig: &Figment, given: &Dict, known: &Dict, path: &mut Vec<String>, prefix: &str, out: &mut Vec<String>) {
        for (key, value) in given {
            path.push(key.clone());
            match known.get(key) {
                None => {
                    let names: Vec<&str> = known.keys().map(String::as_str).collect();
                    let parent = path[..path.len() - 1].join(".");
                    let qualify = |n: &str| if parent.is_empty() { n.to_owned() } else { format!("{parent}.{n}") };
                    let message = match suggestion(key, &names) {
                        Some(close) => {
                            format!("unknown setting `{}`; did you mean `{}`?", path.join("."), qualify(&close))
                        }
                        None => format!("unknown setting `{}` (known here: {})", path.join("."), names.join(", ")),
                    };
                    out.push(match whence(fig, path, prefix) {
                        Some(source) => format!("{source}: {message}"),
                        None => message,
                    });
                }
                Some(Value::Dict(_, inner_known)) => {
                    if let Value::Dict(_, inner) = value {
                        walk(fig, inner, inner_known, path, prefix, out);
                    }
                }
                Some(_) => {}
            }
            path.pop();
        }
    }
    let Ok(given) = fig.extract::<Dict>() else { return Vec::new() };
    let mut out = Vec::new();
    walk(fig, &given, known, &mut Vec::new(), prefix, &mut out);
    out
}

/// One extraction error as one line.
pub fn describe(fig: &Figment, e: &figment::Error, prefix: &str) -> String {
    let key = e.path.join(".");
    let message = match &e.kind {
        Kind::UnknownField(found, known) => {
            let parent = &e.path[..e.path.len().saturating_sub(1)];
            let qualify =
                |name: &str| if parent.is_empty() { name.to_owned() } else { format!("{}.{name}", parent.join(".")) };
            let unknown = if key.is_empty() { found.clone() } else { key.clone() };
            match suggestion(found, known) {
                Some(close) => format!("unknown setting `{unknown}`; did you mean `{}`?", qualify(&close)),
                None => format!("unknown setting `{unknown}` (known here: {})", known.join(", ")),
            }
        }
        Kind::UnknownVariant(found, known) => {
            format!("{key}: unknown value `{found}` (expected one of: {})", known.join(", "))
        }
        kind => format!("{key}: {kind}"),
    };
    match whence(fig, &e.path, prefix) {
        Some(source) => format!("{source}: {message}"),
        None => message,
    }
}

/// A validation message (which starts with the key it is about) with where that key was set.
pub fn with_source(fig: &Figment, message: &str, prefix: &str) -> String {
    let key: String = message.chars().take_while(|c| c.is_ascii_lowercase() || *c == '_' || *c == '.').collect();
    let path: Vec<String> = key.split('.').map(str::to_owned).collect();
    match (key.is_empty(), whence(fig, &path, prefix)) {
        (false, Some(source)) => format!("{source}: {message}"),
        _ => message.to_owned(),
    }
}

/// A list setting: a list, or (convenient in environment variables) one string of items
/// separated by commas: `PORTCULLIS_TRUSTED_PROXIES=127.0.0.1,10.0.0.0/8`.
pub fn list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum List {
        Many(Vec<String>),
        One(String),
    }
    Ok(match List::deserialize(d)? {
        List::Many(items) => items,
        List::One(text) => text.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect(),
    })
}

/// A listen address: `127.0.0.1:8080`, `[::1]:8080`, or a host name and port
/// (`localhost:8080`), resolved once, at start-up (IPv4 first, as most clients try it first).
pub fn listen<'de, D: Deserializer<'de>>(d: D) -> Result<std::net::SocketAddr, D::Error> {
    use serde::de::Error;
    let text = String::deserialize(d)?;
    if let Ok(addr) = text.parse() {
        return Ok(addr);
    }
    let resolved: Vec<std::net::SocketAddr> = std::net::ToSocketAddrs::to_socket_addrs(&text)
        .map_err(|e| {
            D::Error::custom(format!("{text:?} is not an address like \"127.0.0.1:8080\" or \"localhost:8080\" ({e})"))
        })?
        .collect();
    resolved
        .iter()
        .find(|a| a.is_ipv4())
        .or(resolved.first())
        .copied()
        .ok_or_else(|| D::Error::custom(format!("{text:?} resolves to no address")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_links_are_recognised_and_nothing_else() {
        for (key, value) in [
            ("port", "tcp://10.96.0.10:8080"),
            ("port", "UDP://10.96.0.10:53"),
            ("service_host", "10.96.0.10"),
            ("service_port", "8080"),
            ("service_port_http", "8080"),
            ("port_8080_tcp", "tcp://10.96.0.10:8080"),
            ("port_8080_tcp_addr", "10.96.0.10"),
            ("port_8080_tcp_port", "8080"),
            ("port_8080_tcp_proto", "tcp"),
        ] {
            assert!(is_service_link(key, value), "{key}={value}");
        }
        for (key, value) in [
            ("port", "8080"),
            ("listen", "tcp://x"),
            ("port_x_tcp", "1"),
            ("port_8080_http", "1"),
            ("port_8080_tcp_host", "1"),
            ("session__idle_timeout", "5m"),
        ] {
            assert!(!is_service_link(key, value), "{key}={value}");
        }
    }

    #[test]
    fn typos_get_the_closest_name_and_others_none() {
        let known = ["listen", "data_dir", "session", "store", "public_url"];
        assert_eq!(suggestion("sesion", &known).as_deref(), Some("session"));
        assert_eq!(suggestion("data-dir", &known).as_deref(), Some("data_dir"));
        assert_eq!(suggestion("colour", &known), None);
    }
}
