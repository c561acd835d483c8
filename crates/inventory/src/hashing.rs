//! Password hashing with a fixed memory budget: a fixed pool of worker threads, each with its argon2 memory
//! allocated once, fed by a bounded queue with a deadline.
//!
//! # Why
//!
//! Hashing used to run on tokio's blocking pool (up to 512 threads), and every argon2id hash allocated its
//! own 19 MiB. Under a login flood, hundreds of threads each held 19 MiB at once, and glibc kept the freed
//! memory in per-thread arenas: one client looping on `POST /login` took the process from 11 MiB to 220 MiB,
//! 40 clients to 6.7 GiB. Now:
//!
//! - **Workers** (`PASSWORD_HASH_WORKERS`): plain threads, each owning [`MEMORY_BLOCKS`] argon2 blocks (19 MiB)
//!   allocated at start and reused by every hash it runs. Nothing is allocated per hash. The memory the
//!   hashing may take is therefore `workers × 19 MiB`, whatever the traffic.
//! - **Verification** parses the stored PHC string, recomputes with its parameters and salt into the worker's
//!   memory, and compares in constant time. A stored hash whose parameters need more memory than a worker has
//!   is refused (and logged), never given a bigger allocation.
//! - **Queue** (`PASSWORD_HASH_QUEUE`): a hash waits in a bounded queue; when it is full the request is turned
//!   away at once ([`HashError::Busy`]), and a job that waited longer than `PASSWORD_HASH_QUEUE_TIMEOUT_MS` is
//!   dropped unhashed when a worker reaches it ([`HashError::Busy`] too). A job whose client went away is
//!   skipped. The app answers both with 503 and `Retry-After`: a busy page, not an error.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use argon2::password_hash::phc::{Output, ParamsString, PasswordHash, Salt};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use mooring::stats::Histogram;
use subtle::ConstantTimeEq;
use tokio::sync::oneshot;

/// Blocks (1 KiB each) every worker preallocates: argon2's default `m_cost`, 19 MiB, which new hashes use.
pub const MEMORY_BLOCKS: usize = Params::DEFAULT_M_COST as usize;
/// Bytes of argon2 memory per worker.
pub const WORKER_BYTES: usize = MEMORY_BLOCKS * Block::SIZE;

/// A dummy hash with the default parameters, checked for unknown emails so that they take as long as a wrong
/// password (no user enumeration by timing).
const DUMMY: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$ZmFrZWhhc2hmYWtlaGFzaGZha2VoYXNoZmFrZWg";

/// Why a hash was not computed.
#[derive(Debug, thiserror::Error)]
pub enum HashError {
    /// The queue is full, or the job waited longer than the queue timeout: try again shortly.
    #[error("password hashing is busy ({0})")]
    Busy(&'static str),
    /// The pool has stopped (its workers are gone): a bug or a shutdown.
    #[error("password hashing pool has stopped")]
    Stopped,
    /// argon2 refused the input (it should not for the parameters this pool uses).
    #[error("password hashing failed: {0}")]
    Failed(String),
}

/// The pool's sizes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HashPoolConfig {
    /// Worker threads (each with [`WORKER_BYTES`] of argon2 memory).
    pub workers: usize,
    /// Jobs that may wait for a worker.
    pub queue: usize,
    /// How long a job may wait before it is dropped unhashed.
    pub queue_timeout: Duration,
}

impl HashPoolConfig {
    /// The memory the pool's argon2 blocks take, in bytes: `workers × 19 MiB`.
    pub fn memory_budget(&self) -> usize {
        self.workers * WORKER_BYTES
    }
}

/// What the pool has counted, for `/metrics`.
#[derive(Debug, Default)]
pub struct HashStats {
    /// Jobs waiting for a worker right now.
    pub queued: AtomicU64,
    /// Jobs turned away because the queue was full.
    pub rejected_full: AtomicU64,
    /// Jobs dropped because they waited longer than the queue timeout.
    pub rejected_timeout: AtomicU64,
    /// Stored hashes refused because their parameters need more memory than a worker has.
    pub refused_params: AtomicU64,
    /// Time each hash took on its worker.
    pub duration: Histogram,
}

enum Task {
    Hash(String),
    Verify {
        password: String,
        stored: Option<String>,
    },
}

enum Outcome {
    Hashed(String),
    Verified(bool),
}

struct Job {
    task: Task,
    enqueued: Instant,
    reply: oneshot::Sender<Result<Outcome, HashError>>,
}

/// The hashing pool. Cheap to clone; the workers stop when the last clone is dropped.
#[derive(Clone)]
pub struct HashPool {
    jobs: SyncSender<Job>,
    stats: Arc<HashStats>,
    config: HashPoolConfig,
}

impl std::fmt::Debug for HashPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HashPool").field("config", &self.config).finish()
    }
}

impl HashPool {
    /// Starts `config.workers` threads, each allocating its argon2 memory now.
    pub fn start(config: HashPoolConfig) -> std::io::Result<Self> {
        let config = HashPoolConfig {
            workers: config.workers.max(1),
            queue: config.queue.max(1),
            ..config
        };
        let (jobs, receiver) = std::sync::mpsc::sync_channel(config.queue);
        let receiver = Arc::new(Mutex::new(receiver));
        let stats = Arc::new(HashStats::default());
        for n in 0..config.workers {
            let receiver = Arc::clone(&receiver);
            let stats = Arc::clone(&stats);
            std::thread::Builder::new()
                .name(format!("password-hash-{n}"))
                .spawn(move || work(&receiver, &stats, config.queue_timeout))?;
        }
        Ok(Self { jobs, stats, config })
    }

    /// The pool's sizes.
    pub fn config(&self) -> HashPoolConfig {
        self.config
    }

    /// What the pool has counted.
    pub fn stats(&self) -> &Arc<HashStats> {
        &self.stats
    }

    async fn submit(&self, task: Task) -> Result<Outcome, HashError> {
        let (reply, answer) = oneshot::channel();
        let job = Job {
            task,
            enqueued: Instant::now(),
            reply,
        };
        // Counted before sending: a worker may take the job (and decrement) before try_send returns.
        self.stats.queued.fetch_add(1, Ordering::Relaxed);
        match self.jobs.try_send(job) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                self.stats.queued.fetch_sub(1, Ordering::Relaxed);
                self.stats.rejected_full.fetch_add(1, Ordering::Relaxed);
                return Err(HashError::Busy("queue full"));
            }
            Err(TrySendError::Disconnected(_)) => {
                self.stats.queued.fetch_sub(1, Ordering::Relaxed);
                return Err(HashError::Stopped);
            }
        }
        answer.await.map_err(|_| HashError::Stopped)?
    }

    /// Hashes a new password (argon2id, default parameters, random salt) into a PHC string.
    pub async fn hash(&self, password: String) -> Result<String, HashError> {
        match self.submit(Task::Hash(password)).await? {
            Outcome::Hashed(phc) => Ok(phc),
            Outcome::Verified(_) => Err(HashError::Failed("unexpected answer".into())),
        }
    }

    /// Checks a password against a stored PHC string. With no stored hash (unknown email) a dummy hash is
    /// checked, so the answer (false) takes as long as a wrong password.
    pub async fn verify(&self, password: String, stored: Option<String>) -> Result<bool, HashError> {
        match self.submit(Task::Verify { password, stored }).await? {
            Outcome::Verified(ok) => Ok(ok),
            Outcome::Hashed(_) => Err(HashError::Failed("unexpected answer".into())),
        }
    }
}

/// A worker: takes jobs until the pool is dropped, hashing into the memory it allocated once.
fn work(receiver: &Mutex<Receiver<Job>>, stats: &HashStats, queue_timeout: Duration) {
    let mut memory = vec![Block::new(); MEMORY_BLOCKS];
    loop {
        // The lock is held only while waiting for the next job; hashing happens outside it.
        let job = {
            let receiver = receiver.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            receiver.recv()
        };
        let Ok(job) = job else { return };
        stats.queued.fetch_sub(1, Ordering::Relaxed);
        if job.reply.is_closed() {
            continue; // The request was cancelled (client gone): no one is waiting for this hash.
        }
        if job.enqueued.elapsed() > queue_timeout {
            stats.rejected_timeout.fetch_add(1, Ordering::Relaxed);
            let _ = job
                .reply
                .send(Err(HashError::Busy("waited too long in the queue")));
            continue;
        }
        let started = Instant::now();
        let result = match job.task {
            Task::Hash(password) => hash_into(&password, &mut memory).map(Outcome::Hashed),
            Task::Verify { password, stored } => {
                let real = stored.is_some();
                let text = stored.as_deref().unwrap_or(DUMMY);
                Ok(Outcome::Verified(
                    verify_into(&password, text, &mut memory, stats) && real,
                ))
            }
        };
        stats.duration.observe(started.elapsed());
        let _ = job.reply.send(result);
    }
}

/// Hashes `password` with the default argon2id parameters and a random salt, in `memory`.
fn hash_into(password: &str, memory: &mut [Block]) -> Result<String, HashError> {
    let failed = |e: &dyn std::fmt::Display| HashError::Failed(e.to_string());
    let params = Params::DEFAULT;
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).map_err(|e| failed(&e))?;
    let mut out = [0u8; Params::DEFAULT_OUTPUT_LEN];
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone())
        .hash_password_into_with_memory(password.as_bytes(), &salt, &mut out, &mut *memory)
        .map_err(|e| failed(&e))?;
    let phc = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(&params).map_err(|e| failed(&e))?,
        salt: Some(Salt::new(&salt).map_err(|e| failed(&e))?),
        hash: Some(Output::new(&out).map_err(|e| failed(&e))?),
    };
    Ok(phc.to_string())
}

/// Recomputes the stored hash's function with its parameters and salt in `memory`, and compares in constant
/// time. False for anything that does not parse, and for parameters that need more memory than `memory`.
fn verify_into(password: &str, stored: &str, memory: &mut [Block], stats: &HashStats) -> bool {
    let Ok(hash) = PasswordHash::new(stored) else {
        tracing::warn!("a stored password hash is not a PHC string; the sign-in is refused");
        return false;
    };
    let (Ok(algorithm), Ok(params), Some(salt), Some(expected)) = (
        Algorithm::try_from(hash.algorithm.as_str()),
        Params::try_from(&hash),
        hash.salt.as_ref(),
        hash.hash.as_ref(),
    ) else {
        tracing::warn!("a stored password hash is not a complete argon2 hash; the sign-in is refused");
        return false;
    };
    let version = match hash.version.map(Version::try_from).transpose() {
        Ok(v) => v.unwrap_or_default(),
        Err(_) => return false,
    };
    if params.block_count() > memory.len() {
        stats.refused_params.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(
            m_cost_kib = params.m_cost(),
            budget_kib = memory.len(),
            "a stored password hash needs more memory than a hashing worker has; the sign-in is refused \
             (rehash it with the default parameters, m=19456)"
        );
        return false;
    }
    let mut buffer = [0u8; Output::MAX_LENGTH];
    let Some(out) = buffer.get_mut(..expected.len()) else {
        return false;
    };
    let computed = Argon2::new(algorithm, version, params).hash_password_into_with_memory(
        password.as_bytes(),
        salt.as_ref(),
        &mut *out,
        &mut *memory,
    );
    computed.is_ok() && bool::from(out.ct_eq(expected.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use argon2::PasswordVerifier;

    fn pool(workers: usize, queue: usize) -> HashPool {
        HashPool::start(HashPoolConfig {
            workers,
            queue,
            queue_timeout: Duration::from_secs(5),
        })
        .expect("start")
    }

    #[tokio::test]
    async fn hashes_verify_here_and_with_the_argon2_crate() {
        let pool = pool(1, 4);
        let phc = pool.hash("correct horse".into()).await.expect("hash");
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        assert!(
            pool.verify("correct horse".into(), Some(phc.clone()))
                .await
                .unwrap()
        );
        assert!(!pool.verify("wrong".into(), Some(phc.clone())).await.unwrap());
        assert!(!pool.verify("anything".into(), None).await.unwrap());
        // The PHC string is the standard one: the crate's own verifier accepts it.
        let parsed = PasswordHash::new(&phc).unwrap();
        Argon2::default()
            .verify_password(b"correct horse", &parsed)
            .expect("argon2 crate verifies our hash");
    }

    #[tokio::test]
    async fn hashes_from_the_argon2_crate_verify_and_oversized_params_are_refused() {
        use argon2::PasswordHasher as _;
        let pool = pool(1, 4);
        // Smaller parameters than the budget (and another output length) still verify.
        let small = Argon2::new(
            Algorithm::Argon2id,
            Version::V0x13,
            Params::new(4096, 3, 1, Some(24)).unwrap(),
        )
        .hash_password(b"pw")
        .unwrap()
        .to_string();
        assert!(pool.verify("pw".into(), Some(small.clone())).await.unwrap());
        assert!(!pool.verify("pW".into(), Some(small)).await.unwrap());
        let big = Argon2::new(
            Algorithm::Argon2id,
            Version::V0x13,
            Params::new(2 * MEMORY_BLOCKS as u32, 1, 1, None).unwrap(),
        )
        .hash_password(b"pw")
        .unwrap()
        .to_string();
        assert!(
            !pool.verify("pw".into(), Some(big)).await.unwrap(),
            "refused, not allocated"
        );
        assert_eq!(pool.stats().refused_params.load(Ordering::Relaxed), 1);
        assert!(!pool.verify("pw".into(), Some("not a hash".into())).await.unwrap());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_full_queue_turns_jobs_away_at_once() {
        let pool = pool(1, 1);
        let jobs: Vec<_> = (0..12)
            .map(|_| {
                let pool = pool.clone();
                tokio::spawn(async move { pool.verify("x".into(), None).await })
            })
            .collect();
        let mut busy = 0;
        let mut done = 0;
        for job in jobs {
            match job.await.unwrap() {
                Ok(_) => done += 1,
                Err(HashError::Busy(_)) => busy += 1,
                Err(other) => panic!("{other}"),
            }
        }
        assert!(done >= 1, "some were hashed");
        assert!(
            busy >= 1,
            "with one worker and a queue of one, twelve at once cannot all wait"
        );
        assert_eq!(pool.stats().rejected_full.load(Ordering::Relaxed), busy);
        assert_eq!(pool.stats().queued.load(Ordering::Relaxed), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn jobs_that_waited_past_the_deadline_are_not_hashed() {
        let pool = HashPool::start(HashPoolConfig {
            workers: 1,
            queue: 16,
            queue_timeout: Duration::from_millis(1),
        })
        .expect("start");
        let jobs: Vec<_> = (0..6)
            .map(|_| {
                let pool = pool.clone();
                tokio::spawn(async move { pool.verify("x".into(), None).await })
            })
            .collect();
        let mut timed_out = 0;
        for job in jobs {
            if let Err(HashError::Busy(_)) = job.await.unwrap() {
                timed_out += 1;
            }
        }
        assert!(
            timed_out >= 1,
            "a hash takes longer than 1 ms, so the jobs behind it expire"
        );
        assert_eq!(pool.stats().rejected_timeout.load(Ordering::Relaxed), timed_out);
    }
}
