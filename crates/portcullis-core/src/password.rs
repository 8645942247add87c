//! Passwords: the length policy, and Argon2id hashing on a bounded pool.
//!
//! Hashing is deliberately expensive, so it never runs on the async runtime's worker threads:
//! [`PasswordHasher`] admits at most one hash per core at a time and a bounded queue behind them;
//! past that it answers [`PasswordError::Busy`] at once instead of letting a login storm pile up.
//! Hashes run on the pool's own threads at the lowest CPU priority (nice 19 on Linux), so when
//! the CPU is contended, ordinary requests are served first and a login storm cannot delay them.
//! [`PasswordHasher::verify_or_dummy`] makes an unknown account cost the same as a wrong password.

use std::cell::RefCell;
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{Output, ParamsString, PasswordHash as PhcHash, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use tokio::sync::Semaphore;

/// Shortest accepted password, in bytes.
pub const MIN_PASSWORD_LEN: usize = 8;
/// Longest accepted password, in bytes; longer ones are refused before any hashing, never cut.
pub const MAX_PASSWORD_LEN: usize = 1024;

/// Argon2id memory cost in KiB (19 MiB, the OWASP minimum).
pub const ARGON2_M_KIB: u32 = 19 * 1024;
/// Argon2id iterations.
pub const ARGON2_T: u32 = 2;
/// Argon2id parallelism.
pub const ARGON2_P: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PasswordError {
    #[error("the password must be at least {MIN_PASSWORD_LEN} bytes long")]
    TooShort,
    #[error("the password must be at most {MAX_PASSWORD_LEN} bytes long")]
    TooLong,
    #[error("too many password checks are waiting; try again shortly")]
    Busy,
    #[error("password hashing failed")]
    Internal,
}

/// A plaintext password. Its `Debug` never shows it.
#[derive(Clone)]
pub struct Password(String);

impl Password {
    /// Wraps a password after checking its length (in bytes, before any hashing).
    pub fn new(raw: String) -> Result<Self, PasswordError> {
        if raw.len() < MIN_PASSWORD_LEN {
            return Err(PasswordError::TooShort);
        }
        if raw.len() > MAX_PASSWORD_LEN {
            return Err(PasswordError::TooLong);
        }
        Ok(Self(raw))
    }

    /// Wraps a password offered at login. Only the upper bound is checked: a short password can
    /// simply be wrong, and refusing it differently would tell an attacker about the policy only.
    pub fn candidate(raw: String) -> Result<Self, PasswordError> {
        if raw.len() > MAX_PASSWORD_LEN {
            return Err(PasswordError::TooLong);
        }
        Ok(Self(raw))
    }

    fn bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password([redacted])")
    }
}

/// An Argon2id hash in PHC string form (`$argon2id$v=19$m=19456,t=2,p=1$…`).
#[derive(Clone, PartialEq, Eq)]
pub struct PasswordHash(String);

impl PasswordHash {
    pub fn from_phc(s: String) -> Self {
        Self(s)
    }

    pub fn as_phc(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for PasswordHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PasswordHash([redacted])")
    }
}

fn argon2() -> Argon2<'static> {
    // The parameters are constants known to be valid; `Params::DEFAULT` is the same family.
    let params = Params::new(ARGON2_M_KIB, ARGON2_T, ARGON2_P, None).unwrap_or(Params::DEFAULT);
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

thread_local! {
    /// The Argon2 working memory of this thread, kept from one hash to the next. Allocating
    /// 19 MiB per hash and freeing it leaves the memory with the allocator (glibc raises its
    /// mmap threshold after the first free), so a process that hashed on many threads held
    /// hundreds of MiB; one buffer per pool thread bounds it at workers × 19 MiB.
    static BLOCKS: RefCell<Vec<Block>> = const { RefCell::new(Vec::new()) };
}

/// Runs Argon2 into an output of `len` bytes with this thread's working memory.
fn compute(argon: &Argon2<'_>, password: &[u8], salt: &[u8], len: usize) -> Option<Output> {
    BLOCKS.with(|blocks| {
        let mut blocks = blocks.borrow_mut();
        let count = argon.params().block_count();
        if blocks.len() < count {
            blocks.resize(count, Block::default());
        }
        Output::init_with(len, |out| {
            argon
                .hash_password_into_with_memory(password, salt, out, &mut blocks[..count])
                .map_err(|_| argon2::password_hash::Error::Password)
        })
        .ok()
    })
}

fn hash_blocking(password: &Password) -> Result<PasswordHash, PasswordError> {
    let salt = SaltString::generate(&mut OsRng);
    let argon = argon2();
    let mut salt_buf = [0u8; 64];
    let salt_bytes = salt.as_salt().decode_b64(&mut salt_buf).map_err(|_| PasswordError::Internal)?;
    let output =
        compute(&argon, password.bytes(), salt_bytes, Params::DEFAULT_OUTPUT_LEN).ok_or(PasswordError::Internal)?;
    let phc = PhcHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(argon.params()).map_err(|_| PasswordError::Internal)?,
        salt: Some(salt.as_salt()),
        hash: Some(output),
    };
    Ok(PasswordHash(phc.to_string()))
}

fn verify_blocking(password: &Password, hash: &PasswordHash) -> bool {
    let Ok(parsed) = PhcHash::new(&hash.0) else { return false };
    // The parameters come from the stored hash, so hashes made with stronger settings verify.
    let (Ok(algorithm), Ok(params)) = (Algorithm::try_from(parsed.algorithm), Params::try_from(&parsed)) else {
        return false;
    };
    let Ok(version) = parsed.version.map_or(Ok(Version::V0x13), Version::try_from) else { return false };
    let (Some(salt), Some(expected)) = (parsed.salt, parsed.hash) else { return false };
    let mut salt_buf = [0u8; 64];
    let Ok(salt) = salt.decode_b64(&mut salt_buf) else { return false };
    let argon = Argon2::new(algorithm, version, params);
    // `Output`'s equality is constant-time.
    compute(&argon, password.bytes(), salt, expected.len()).is_some_and(|computed| computed == expected)
}

/// Releases an admission slot when dropped, even if the waiting future is cancelled.
struct InFlight<'a>(&'a AtomicUsize);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The bounded Argon2id pool.
#[derive(Clone)]
pub struct PasswordHasher {
    inner: Arc<Inner>,
}

/// One hash, run on a pool thread.
type Job = Box<dyn FnOnce() + Send + 'static>;

struct Inner {
    permits: Arc<Semaphore>,
    /// To the pool's threads; they end when the last hasher is dropped.
    jobs: Mutex<mpsc::Sender<Job>>,
    workers: usize,
    max_waiting: usize,
    /// Jobs admitted and not finished: running plus waiting.
    in_flight: AtomicUsize,
    dummy: PasswordHash,
}

impl PasswordHasher {
    /// A pool running `workers` hashes at a time with at most `max_waiting` more queued.
    pub fn new(workers: usize, max_waiting: usize) -> Result<Self, PasswordError> {
        let workers = workers.max(1);
        let (jobs, queue) = mpsc::channel::<Job>();
        let queue = Arc::new(Mutex::new(queue));
        for n in 0..workers {
            let queue = Arc::clone(&queue);
            std::thread::Builder::new()
                .name(format!("portcullis-hash-{n}"))
                .spawn(move || {
                    // Best effort: where the OS refuses, hashes run at normal priority.
                    let _ = thread_priority::set_current_thread_priority(thread_priority::ThreadPriority::Min);
                    loop {
                        let job = match queue.lock() {
                            Ok(q) => q.recv(),
                            Err(_) => return,
                        };
                        match job {
                            Ok(job) => job(),
                            Err(_) => return,
                        }
                    }
                })
                .map_err(|_| PasswordError::Internal)?;
        }
        // The dummy is hashed on a pool thread too, so no other thread keeps working memory.
        let (dummy_tx, dummy_rx) = mpsc::channel();
        let dummy_job: Job = Box::new(move || {
            let mut random = [0u8; 32];
            crate::secret::fill_random(&mut random);
            let _ = dummy_tx.send(hash_blocking(&Password(crate::secret::b64(&random))));
        });
        jobs.send(dummy_job).map_err(|_| PasswordError::Internal)?;
        let dummy = dummy_rx.recv().map_err(|_| PasswordError::Internal)??;
        Ok(Self {
            inner: Arc::new(Inner {
                permits: Arc::new(Semaphore::new(workers)),
                jobs: Mutex::new(jobs),
                workers,
                max_waiting,
                in_flight: AtomicUsize::new(0),
                dummy,
            }),
        })
    }

    /// One worker per available core, and a queue of 64 per worker.
    pub fn with_default_size() -> Result<Self, PasswordError> {
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        Self::new(cores, 64 * cores)
    }

    pub fn workers(&self) -> usize {
        self.inner.workers
    }

    /// How many hash requests are waiting for a worker right now.
    pub fn queue_depth(&self) -> usize {
        self.inner.in_flight.load(Ordering::Relaxed).saturating_sub(self.inner.workers)
    }

    async fn run<T: Send + 'static>(&self, job: impl FnOnce() -> T + Send + 'static) -> Result<T, PasswordError> {
        let inner = &self.inner;
        let admitted = inner.in_flight.fetch_add(1, Ordering::SeqCst);
        let _slot = InFlight(&inner.in_flight);
        if admitted >= inner.max_waiting + inner.workers {
            return Err(PasswordError::Busy);
        }
        let permit = Arc::clone(&inner.permits).acquire_owned().await.map_err(|_| PasswordError::Internal)?;
        // The permit moves into the job, so a caller that gives up (a client that disconnects)
        // cannot free a worker slot while its hash is still running.
        let (done, result) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            let _permit = permit;
            let _ = done.send(job());
        });
        inner.jobs.lock().map_err(|_| PasswordError::Internal)?.send(job).map_err(|_| PasswordError::Internal)?;
        result.await.map_err(|_| PasswordError::Internal)
    }

    /// Hashes a new password with a fresh random salt.
    pub async fn hash(&self, password: Password) -> Result<PasswordHash, PasswordError> {
        self.run(move || hash_blocking(&password)).await?
    }

    /// Checks `password` against `hash`; with no hash (unknown account) it checks against a
    /// dummy hash of the same cost and answers `false`, so both cases take the same time.
    pub async fn verify_or_dummy(&self, password: Password, hash: Option<PasswordHash>) -> Result<bool, PasswordError> {
        let (hash, real) = match hash {
            Some(h) => (h, true),
            None => (self.inner.dummy.clone(), false),
        };
        let ok = self.run(move || verify_blocking(&password, &hash)).await?;
        Ok(ok && real)
    }
}

impl fmt::Debug for PasswordHasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PasswordHasher").field("workers", &self.inner.workers).finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn length_is_checked_in_bytes_before_hashing() {
        assert_eq!(Password::new("1234567".into()).err(), Some(PasswordError::TooShort));
        assert!(Password::new("12345678".into()).is_ok());
        assert!(Password::new("x".repeat(MAX_PASSWORD_LEN)).is_ok());
        assert_eq!(Password::new("x".repeat(MAX_PASSWORD_LEN + 1)).err(), Some(PasswordError::TooLong));
        // 7 characters but 14 bytes: long enough.
        assert!(Password::new("ééééééé".into()).is_ok());
        assert_eq!(Password::candidate("x".repeat(2000)).err(), Some(PasswordError::TooLong));
        assert!(Password::candidate("short".into()).is_ok());
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let p = Password::new("correct horse battery".into()).expect("valid");
        assert!(!format!("{p:?}").contains("horse"));
    }

    /// Hashes are standard PHC strings: those the argon2 crate's own hasher made (every stored
    /// hash before the working memory was kept per thread) verify here, ours verify there, and
    /// stronger stored parameters are honoured.
    #[test]
    fn hashes_are_interchangeable_with_the_reference_hasher() {
        use argon2::password_hash::{PasswordHasher as _, PasswordVerifier as _};
        let pw = Password::new("correct horse battery".into()).expect("valid");
        let salt = SaltString::generate(&mut OsRng);
        let theirs = argon2().hash_password(pw.bytes(), &salt).expect("hash").to_string();
        assert!(verify_blocking(&pw, &PasswordHash(theirs.clone())));
        let ours = hash_blocking(&pw).expect("hash");
        let parsed = PhcHash::new(ours.as_phc()).expect("phc");
        assert!(argon2().verify_password(pw.bytes(), &parsed).is_ok());
        let stronger =
            Argon2::new(Algorithm::Argon2id, Version::V0x13, Params::new(32 * 1024, 3, 1, None).expect("params"));
        let strong = stronger.hash_password(pw.bytes(), &salt).expect("hash").to_string();
        assert!(verify_blocking(&pw, &PasswordHash(strong.clone())));
        let wrong = Password::candidate("correct horse battery?".into()).expect("valid");
        assert!(!verify_blocking(&wrong, &PasswordHash(strong)));
        assert!(!verify_blocking(&wrong, &PasswordHash(theirs)));
        assert!(!verify_blocking(&pw, &PasswordHash("$argon2id$v=19$m=19456,t=2,p=1$bad".into())));
    }

    #[tokio::test]
    async fn hashes_are_argon2id_with_the_required_cost_and_verify() {
        let hasher = PasswordHasher::new(2, 4).expect("pool");
        let pw = Password::new("correct horse battery".into()).expect("valid");
        let hash = hasher.hash(pw.clone()).await.expect("hash");
        assert!(hash.as_phc().starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{}", hash.as_phc());
        assert!(hasher.verify_or_dummy(pw.clone(), Some(hash.clone())).await.expect("verify"));
        let wrong = Password::candidate("correct horse battery!".into()).expect("valid");
        assert!(!hasher.verify_or_dummy(wrong, Some(hash.clone())).await.expect("verify"));
        // The dummy path never succeeds, even for the dummy's own (unknown) password.
        assert!(!hasher.verify_or_dummy(pw, None).await.expect("verify"));
        // A password that differs only after byte 72 (bcrypt's limit) is a different password.
        let long_a = Password::new(format!("{}a", "x".repeat(100))).expect("valid");
        let long_b = Password::new(format!("{}b", "x".repeat(100))).expect("valid");
        let h = hasher.hash(long_a).await.expect("hash");
        assert!(!hasher.verify_or_dummy(long_b, Some(h)).await.expect("verify"));
    }

    #[tokio::test]
    async fn a_full_queue_answers_busy_instead_of_waiting() {
        let hasher = PasswordHasher::new(1, 0).expect("pool");
        let pw = Password::new("correct horse battery".into()).expect("valid");
        let h1 = hasher.clone();
        let p1 = pw.clone();
        let first = tokio::spawn(async move { h1.hash(p1).await });
        // Wait until the first job holds the only worker.
        while hasher.inner.permits.available_permits() != 0 {
            tokio::task::yield_now().await;
        }
        assert_eq!(hasher.hash(pw).await.err(), Some(PasswordError::Busy));
        assert!(first.await.expect("join").is_ok());
    }

    /// The hashing threads give way to everything else when the CPU is contended.
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn hashes_run_at_the_lowest_cpu_priority() {
        let hasher = PasswordHasher::new(1, 1).expect("pool");
        let nice = hasher
            .run(|| {
                let stat = std::fs::read_to_string("/proc/thread-self/stat").expect("stat");
                // Fields after the command name, which is in parentheses: nice is the 19th field.
                let after = stat.rsplit_once(')').map(|(_, rest)| rest.to_owned()).expect("fields");
                after.split_whitespace().nth(16).and_then(|n| n.parse::<i32>().ok()).expect("nice")
            })
            .await
            .expect("runs");
        assert_eq!(nice, 19);
    }
}
