//! Micro-benchmarks of store operations on the embedded backends. Run with
//! `cargo bench -p portcullis-store`.

use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use portcullis_core::{AuthMode, ClientInfo, SessionPolicy, SessionRecord, SessionToken, Timestamp, UserId};
use portcullis_store::SessionStore;

fn record() -> SessionRecord {
    let policy = SessionPolicy {
        idle_timeout: Duration::from_secs(1800),
        absolute_timeout: Duration::from_secs(43200),
        refresh_ttl: Duration::from_secs(86400),
    };
    let client = ClientInfo { ip: Some("203.0.113.7".into()), user_agent: Some("Mozilla/5.0".into()) };
    policy.new_record(
        &SessionToken::generate(),
        UserId::generate(),
        AuthMode::Session,
        Timestamp::from_unix_millis(1_800_000_000_000),
        client,
    )
}

fn bench_store(c: &mut Criterion, name: &str, rt: &tokio::runtime::Runtime, store: &dyn SessionStore) {
    let known = record();
    rt.block_on(store.create(&known)).ok();
    c.bench_function(&format!("{name}: get"), |b| b.to_async(rt).iter(|| store.get(&known.id)));
    c.bench_function(&format!("{name}: create"), |b| b.to_async(rt).iter(|| async { store.create(&record()).await }));
}

fn stores(c: &mut Criterion) {
    let Ok(rt) = tokio::runtime::Builder::new_multi_thread().enable_all().build() else { return };
    let memory = portcullis_store::memory::MemorySessionStore::new();
    bench_store(c, "memory", &rt, &memory);
    let Ok(dir) = tempfile::tempdir() else { return };
    let Ok(sqlite) = rt.block_on(portcullis_store::sqlite::SqliteStore::open(dir.path().join("bench.db"))) else {
        return;
    };
    bench_store(c, "sqlite", &rt, &sqlite);
}

criterion_group!(benches, stores);
criterion_main!(benches);
