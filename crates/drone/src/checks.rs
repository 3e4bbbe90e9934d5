//! The drone's checks: the check set the hive signed for this drone, run
//! one task per check on its interval, through the drone's `[policy]`;
//! each run's outcome goes through `ultron8_core::health::Tracker`, and
//! each transition is spooled to disk before it is reported
//! (`ReportCheckTransitions`), so none is lost while the hive is down.
//!
//! On disk, under `<data-dir>/checks/`:
//! - `set.json`: the last verified set: its bytes, the hive's signature and
//!   the public key it verified with (handed out at registration over
//!   mutual TLS). Verified again when loaded, so a drone that starts while
//!   the hive is unreachable runs what the hive last signed for it, and
//!   nothing else. A set is refused unless it names this drone and, when
//!   the hive announced one, the version announced.
//! - `state.json`: each check's tracker (counts, state, since), last run
//!   and last output line, written after every run, so a restart does not
//!   reset counts. A transition is spooled before the state that caused it
//!   is saved: a crash between the two may report a transition twice (with
//!   two ids), never lose one.
//! - `transitions/<id>.json`: transitions the hive has not acknowledged.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use chrono::Utc;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tracing::{debug, error, info, warn};
use ultron8_core::ExecutionStatus;
use ultron8_core::checks::{
    self, CheckSet, CheckSpec, CheckStatus, CheckTransition, MAX_OUTPUT_BYTES,
};
use ultron8_core::health::{CommandEnd, RunOutcome, Tracker, classify_exit};
use ultron8_pki::RequestVerifier;
use ultron8_proto::v1::{self, drone_service_client::DroneServiceClient};

use crate::backoff::Backoff;
use crate::executor::{self, ExecSpec};
use crate::policy::Policy;

/// What a check's output is cut to before its last line is taken.
const CHECK_OUTPUT_LIMIT: usize = 64 * 1024;

/// Most transitions per report.
const BATCH: usize = 500;

/// A set as kept on disk.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredSet {
    check_set: String,
    signature: String,
    public_key: String,
}

/// One check's memory, kept across restarts.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct CheckMemory {
    tracker: Tracker,
    last_run_ms: Option<i64>,
    last_output: String,
}

/// A running check task.
struct Running {
    spec: CheckSpec,
    stop: CancellationToken,
}

pub struct Checks {
    dir: PathBuf,
    drone_id: String,
    client: DroneServiceClient<Channel>,
    policy: Policy,
    scripts_dir: PathBuf,
    kill_grace: Duration,
    /// The set in force and its version ("" when none).
    set: Mutex<Option<CheckSet>>,
    memory: Mutex<BTreeMap<String, CheckMemory>>,
    running: Mutex<BTreeMap<String, Running>>,
    /// Serializes writes of state.json.
    save: Mutex<()>,
    /// Wakes the deliverer when a transition is spooled.
    spooled: Notify,
    /// Wakes the refresher: the hive announced another version.
    refresh: Notify,
    wanted: Mutex<Option<String>>,
    verifier: Mutex<Option<(RequestVerifier, Vec<u8>)>>,
    shutdown: CancellationToken,
}

/// Why a check set is refused.
pub fn verify_set(
    bytes: &[u8],
    signature: &[u8],
    verifier: &RequestVerifier,
    drone_id: &str,
    announced: Option<&str>,
) -> Result<CheckSet, String> {
    verifier
        .verify(&checks::signed_bytes(bytes), signature)
        .map_err(|_| {
            "the check set's signature does not verify: forged or corrupted".to_string()
        })?;
    let set: CheckSet = serde_json::from_slice(bytes)
        .map_err(|e| format!("the signed check set does not decode: {e}"))?;
    if set.drone_id != drone_id {
        return Err(format!(
            "the check set is for drone {}, not this one",
            ultron8_core::echo::quote(&set.drone_id)
        ));
    }
    if let Some(announced) = announced
        && !announced.is_empty()
        && set.version != announced
    {
        return Err(format!(
            "the check set is version {}, not the {announced} the hive announced",
            set.version
        ));
    }
    Ok(set)
}

fn version_of(set: &CheckSet) -> String {
    if set.checks.is_empty() {
        String::new()
    } else {
        set.version.clone()
    }
}

impl Checks {
    /// Opens `dir`, loading the last verified set and the checks' memory.
    /// A set that no longer verifies is dropped with an error: the drone
    /// then runs no check until the hive hands it one.
    pub fn open(
        dir: &Path,
        drone_id: &str,
        client: DroneServiceClient<Channel>,
        policy: Policy,
        scripts_dir: PathBuf,
        kill_grace: Duration,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Arc<Checks>> {
        std::fs::create_dir_all(dir.join("transitions"))
            .with_context(|| format!("cannot create {}", dir.display()))?;
        let checks = Checks {
            dir: dir.to_path_buf(),
            drone_id: drone_id.to_string(),
            client,
            policy,
            scripts_dir,
            kill_grace,
            set: Mutex::new(None),
            memory: Mutex::new(BTreeMap::new()),
            running: Mutex::new(BTreeMap::new()),
            save: Mutex::new(()),
            spooled: Notify::new(),
            refresh: Notify::new(),
            wanted: Mutex::new(None),
            verifier: Mutex::new(None),
            shutdown,
        };
        match std::fs::read(checks.state_path()) {
            Ok(bytes) => match serde_json::from_slice(&bytes) {
                Ok(memory) => *lock(&checks.memory) = memory,
                Err(e) => warn!(error = %e, "the checks' state does not decode; starting afresh"),
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => warn!(error = %e, "cannot read the checks' state; starting afresh"),
        }
        match checks.load_set() {
            Ok(Some((set, verifier, key))) => {
                info!(checks = set.checks.len(), version = %set.version, "loaded the last verified check set");
                *lock(&checks.verifier) = Some((verifier, key));
                *lock(&checks.set) = Some(set);
            }
            Ok(None) => {}
            Err(e) => {
                error!(error = %e, "the stored check set is refused; running no check until the hive sends one")
            }
        }
        Ok(Arc::new(checks))
    }

    fn state_path(&self) -> PathBuf {
        self.dir.join("state.json")
    }

    fn set_path(&self) -> PathBuf {
        self.dir.join("set.json")
    }

    fn transitions_dir(&self) -> PathBuf {
        self.dir.join("transitions")
    }

    fn load_set(&self) -> anyhow::Result<Option<(CheckSet, RequestVerifier, Vec<u8>)>> {
        let bytes = match std::fs::read(self.set_path()) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let stored: StoredSet = serde_json::from_slice(&bytes)?;
        let decode = |text: &str| STANDARD.decode(text);
        let key = decode(&stored.public_key)?;
        let verifier = RequestVerifier::new(key.clone());
        let set = verify_set(
            &decode(&stored.check_set)?,
            &decode(&stored.signature)?,
            &verifier,
            &self.drone_id,
            None,
        )
        .map_err(anyhow::Error::msg)?;
        Ok(Some((set, verifier, key)))
    }

    /// The version of the set in force ("" when none).
    pub fn version(&self) -> String {
        lock(&self.set).as_ref().map(version_of).unwrap_or_default()
    }

    /// Starts the tasks of the set in force.
    pub fn start(self: &Arc<Self>) {
        let specs = lock(&self.set)
            .as_ref()
            .map(|s| s.checks.clone())
            .unwrap_or_default();
        self.apply(specs);
    }

    /// The hive's key, from registration. A stored set verified with
    /// another key is fetched again.
    pub fn registered(&self, verifier: RequestVerifier, public_key: Vec<u8>) {
        let changed = lock(&self.verifier)
            .as_ref()
            .is_none_or(|(_, key)| *key != public_key);
        *lock(&self.verifier) = Some((verifier, public_key));
        if changed && lock(&self.set).is_some() {
            info!(
                "the hive's signing key is not the one the stored check set was verified with; fetching the set again"
            );
            *lock(&self.wanted) = Some("(key changed)".into());
            self.refresh.notify_one();
        }
    }

    /// What the heartbeat answered: fetches the set when its version is
    /// not the one in force.
    pub fn announced(&self, version: &str) {
        if version != self.version() {
            *lock(&self.wanted) = Some(version.to_string());
            self.refresh.notify_one();
        }
    }

    /// Fetches, verifies, keeps and applies the set the hive announced,
    /// retrying with backoff while it cannot.
    pub async fn refresh_loop(self: Arc<Self>) {
        let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
        loop {
            let wake = self.refresh.notified();
            let wanted = lock(&self.wanted).clone();
            let delay = match wanted {
                None => None,
                Some(wanted) => match self.fetch(&wanted).await {
                    Ok(()) => {
                        backoff.reset();
                        let mut slot = lock(&self.wanted);
                        if slot.as_deref() == Some(wanted.as_str()) {
                            *slot = None;
                        }
                        None
                    }
                    Err(e) => {
                        let delay = backoff.next_delay();
                        warn!(error = %e, retry_in = ?delay, "cannot take the hive's check set; the checks in force go on");
                        Some(delay)
                    }
                },
            };
            tokio::select! {
                _ = wake => {}
                _ = tokio::time::sleep(delay.unwrap_or(Duration::from_secs(3600))), if delay.is_some() => {}
                _ = self.shutdown.cancelled() => return,
            }
        }
    }

    async fn fetch(self: &Arc<Self>, wanted: &str) -> anyhow::Result<()> {
        let Some((verifier, key)) = lock(&self.verifier).clone() else {
            anyhow::bail!("not registered yet: no key to verify a check set with");
        };
        let response = self
            .client
            .clone()
            .get_checks(v1::GetChecksRequest {})
            .await
            .map_err(|s| anyhow::anyhow!("{:?}: {}", s.code(), s.message()))?
            .into_inner();
        if response.key_id != verifier.key_id() {
            anyhow::bail!(
                "the check set is signed with key {}, not the hive's {}",
                ultron8_core::echo::quote(&response.key_id),
                verifier.key_id()
            );
        }
        // A version announced earlier may be stale by now; the signature,
        // the drone id and the set's own version are what matter.
        let announced = (!wanted.starts_with('(')).then_some(wanted);
        let set = match verify_set(
            &response.check_set,
            &response.signature,
            &verifier,
            &self.drone_id,
            None,
        ) {
            Ok(set) => set,
            Err(e) => anyhow::bail!(e),
        };
        if let Some(announced) = announced
            && version_of(&set) != announced
        {
            debug!(announced, got = %set.version, "the hive's check set changed since it was announced");
        }
        let stored = StoredSet {
            check_set: STANDARD.encode(&response.check_set),
            signature: STANDARD.encode(&response.signature),
            public_key: STANDARD.encode(&key),
        };
        let bytes = serde_json::to_vec(&stored)?;
        ultron8_host::write_atomically(&self.set_path(), &bytes, 0o600)
            .with_context(|| format!("cannot write {}", self.set_path().display()))?;
        info!(checks = set.checks.len(), version = %set.version, "check set verified and in force");
        let specs = set.checks.clone();
        *lock(&self.set) = Some(set);
        self.apply(specs);
        Ok(())
    }

    /// Makes the running tasks those of `specs`: stops the ones gone or
    /// changed, starts the new and changed ones, and forgets the memory of
    /// checks no longer in the set.
    fn apply(self: &Arc<Self>, specs: Vec<CheckSpec>) {
        let mut running = lock(&self.running);
        let wanted: BTreeMap<String, CheckSpec> = specs
            .into_iter()
            .map(|s| (s.reference.clone(), s))
            .collect();
        running.retain(|reference, task| {
            let keep = wanted.get(reference) == Some(&task.spec);
            if !keep {
                task.stop.cancel();
            }
            keep
        });
        {
            let mut memory = lock(&self.memory);
            memory.retain(|reference, _| wanted.contains_key(reference));
            for spec in wanted.values() {
                memory
                    .entry(spec.reference.clone())
                    .and_modify(|m| m.tracker.set_thresholds(spec.thresholds))
                    .or_insert_with(|| CheckMemory {
                        tracker: Tracker::new(spec.thresholds),
                        last_run_ms: None,
                        last_output: String::new(),
                    });
            }
        }
        for (reference, spec) in wanted {
            if running.contains_key(&reference) {
                continue;
            }
            let stop = self.shutdown.child_token();
            running.insert(
                reference,
                Running {
                    spec: spec.clone(),
                    stop: stop.clone(),
                },
            );
            tokio::spawn(self.clone().check_loop(spec, stop));
        }
        drop(running);
        self.save_state();
    }

    async fn check_loop(self: Arc<Self>, spec: CheckSpec, stop: CancellationToken) {
        info!(check = %spec.reference, interval = ?spec.interval, "check started");
        let mut ticks = tokio::time::interval(spec.interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                _ = stop.cancelled() => return,
            }
            let (outcome, output) = tokio::select! {
                ran = self.run_once(&spec, stop.clone()) => ran,
                _ = stop.cancelled() => return,
            };
            if stop.is_cancelled() {
                return;
            }
            self.observe(&spec, outcome, output);
        }
    }

    /// Runs the check once: its outcome and its last line of output.
    async fn run_once(&self, spec: &CheckSpec, stop: CancellationToken) -> (RunOutcome, String) {
        let user = match self.policy.decide_check(&spec.reference, &spec.program) {
            Ok(user) => user,
            Err(refusal) => return (RunOutcome::Error, refusal.reason),
        };
        let program = match crate::runtime::resolve_program(
            &self.client,
            &self.scripts_dir,
            spec.program.clone(),
        )
        .await
        {
            Ok(program) => program,
            Err(e) => return (RunOutcome::Error, e),
        };
        let exec = ExecSpec {
            program,
            env: BTreeMap::new(),
            working_dir: None,
            timeout: spec.timeout,
            kill_grace: self.kill_grace,
            output_limit: CHECK_OUTPUT_LIMIT,
            user,
        };
        let outcome = executor::run_cancellable(exec, None, stop, None).await;
        let end = CommandEnd {
            exit_code: outcome.exit_code,
            timed_out: outcome.status == ExecutionStatus::TimedOut,
            wrote_stdout: !outcome.stdout.iter().all(u8::is_ascii_whitespace),
            wrote_stderr: !outcome.stderr.iter().all(u8::is_ascii_whitespace),
        };
        let mut line = checks::last_line(&outcome.stdout, MAX_OUTPUT_BYTES);
        if line.is_empty() {
            line = checks::last_line(&outcome.stderr, MAX_OUTPUT_BYTES);
        }
        if let Some(error) = &outcome.error
            && (line.is_empty() || outcome.exit_code.is_none() || end.timed_out)
        {
            line = checks::last_line(error.as_bytes(), MAX_OUTPUT_BYTES);
        }
        (classify_exit(end), line)
    }

    fn observe(&self, spec: &CheckSpec, outcome: RunOutcome, output: String) {
        let now = Utc::now();
        let transition = {
            let mut memory = lock(&self.memory);
            let Some(entry) = memory.get_mut(&spec.reference) else {
                return;
            };
            entry.last_run_ms = Some(now.timestamp_millis());
            entry.last_output = output.clone();
            entry
                .tracker
                .observe(outcome, now)
                .map(|state| CheckTransition {
                    id: new_transition_id(),
                    check: spec.reference.clone(),
                    state,
                    consecutive: entry.tracker.consecutive(),
                    output,
                    at_ms: now.timestamp_millis(),
                })
        };
        debug!(check = %spec.reference, %outcome, "check ran");
        if let Some(transition) = transition {
            info!(check = %spec.reference, state = %transition.state, consecutive = transition.consecutive, "check transition");
            match self.spool(&transition) {
                Ok(()) => self.spooled.notify_one(),
                Err(e) => {
                    error!(error = %e, check = %spec.reference, "cannot spool a check transition; it is lost")
                }
            }
        }
        self.save_state();
    }

    fn save_state(&self) {
        let _guard = lock(&self.save);
        let bytes = match serde_json::to_vec(&*lock(&self.memory)) {
            Ok(bytes) => bytes,
            Err(e) => return error!(error = %e, "cannot encode the checks' state"),
        };
        if let Err(e) = ultron8_host::write_atomically(&self.state_path(), &bytes, 0o600) {
            warn!(error = %e, "cannot save the checks' state; a restart would reset their counts");
        }
    }

    fn spool(&self, transition: &CheckTransition) -> std::io::Result<()> {
        let bytes = serde_json::to_vec(transition).map_err(std::io::Error::other)?;
        let path = self
            .transitions_dir()
            .join(format!("{}.json", transition.id));
        ultron8_host::write_atomically(&path, &bytes, 0o600)?;
        std::fs::File::open(self.transitions_dir())?.sync_all()
    }

    /// Transitions waiting for the hive, oldest first.
    pub fn pending(&self) -> std::io::Result<Vec<(PathBuf, CheckTransition)>> {
        let mut pending = Vec::new();
        for dirent in std::fs::read_dir(self.transitions_dir())? {
            let path = dirent?.path();
            if path.extension().and_then(|e| e.to_str()) != Some("json") {
                continue;
            }
            match std::fs::read(&path)
                .map_err(|e| e.to_string())
                .and_then(|b| {
                    serde_json::from_slice::<CheckTransition>(&b).map_err(|e| e.to_string())
                }) {
                Ok(transition) => pending.push((path, transition)),
                Err(e) => {
                    warn!(path = %path.display(), error = %e, "corrupt spooled transition moved aside");
                    let _ = std::fs::rename(&path, path.with_extension("corrupt"));
                }
            }
        }
        pending.sort_by(|a, b| (a.1.at_ms, &a.1.id).cmp(&(b.1.at_ms, &b.1.id)));
        Ok(pending)
    }

    /// Delivers spooled transitions until the hive holds them; each leaves
    /// the disk only then.
    pub async fn deliver_loop(self: Arc<Self>) {
        let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
        loop {
            let wake = self.spooled.notified();
            let delay = match self.deliver().await {
                Ok(()) => {
                    backoff.reset();
                    Duration::from_secs(30)
                }
                Err(e) => {
                    let delay = backoff.next_delay();
                    debug!(error = %e, retry_in = ?delay, "hive unreachable; check transitions stay spooled");
                    delay
                }
            };
            tokio::select! {
                _ = wake => {}
                _ = tokio::time::sleep(delay) => {}
                _ = self.shutdown.cancelled() => return,
            }
        }
    }

    async fn deliver(&self) -> anyhow::Result<()> {
        let pending = self.pending()?;
        for batch in pending.chunks(BATCH) {
            let request = v1::ReportCheckTransitionsRequest {
                transitions: batch
                    .iter()
                    .map(|(_, t)| v1::CheckTransition {
                        id: t.id.clone(),
                        check: t.check.clone(),
                        state: t.state.as_str().to_string(),
                        consecutive: t.consecutive,
                        output: t.output.clone(),
                        at_ms: t.at_ms,
                    })
                    .collect(),
            };
            match self.client.clone().report_check_transitions(request).await {
                Ok(_) => {}
                Err(status) if crate::runtime::is_permanent(&status) => {
                    // It will never take them (e.g. this drone was removed
                    // from the fleet); retrying would not change that.
                    error!(error = %status.message(), count = batch.len(),
                        "the hive refused check transitions permanently; dropping them");
                }
                Err(status) => {
                    anyhow::bail!("{:?}: {}", status.code(), status.message())
                }
            }
            for (path, transition) in batch {
                if let Err(e) = std::fs::remove_file(path)
                    && e.kind() != std::io::ErrorKind::NotFound
                {
                    warn!(error = %e, id = %transition.id, "cannot remove a delivered transition");
                }
            }
            debug!(count = batch.len(), "check transitions delivered");
        }
        Ok(())
    }

    /// Every check's state, for the heartbeat.
    pub fn summary(&self) -> Vec<v1::CheckStatus> {
        lock(&self.memory)
            .iter()
            .map(|(reference, m)| {
                let status = CheckStatus {
                    check: reference.clone(),
                    state: m.tracker.state(),
                    since_ms: m.tracker.since().map(|t| t.timestamp_millis()),
                    last_run_ms: m.last_run_ms,
                    last_output: m.last_output.clone(),
                };
                v1::CheckStatus {
                    check: status.check,
                    state: status.state.as_str().to_string(),
                    since_ms: status.since_ms.unwrap_or(0),
                    last_run_ms: status.last_run_ms.unwrap_or(0),
                    last_output: status.last_output,
                }
            })
            .collect()
    }
}

/// A unique id: the time, then 64 random bits.
fn new_transition_id() -> String {
    format!(
        "{:013x}-{:016x}",
        Utc::now().timestamp_millis(),
        rand::random::<u64>()
    )
}

/// A poisoned lock still holds consistent data here (every critical
/// section is a plain assignment or map edit), so it is taken anyway.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ultron8_core::Program;
    use ultron8_core::health::Thresholds;
    use ultron8_pki::RequestSigningKey;

    fn key() -> RequestSigningKey {
        let der = RequestSigningKey::generate_pkcs8().expect("generate");
        RequestSigningKey::from_pkcs8(&der).expect("load")
    }

    fn set(drone: &str) -> Vec<u8> {
        serde_json::to_vec(&CheckSet {
            drone_id: drone.into(),
            version: "v1".into(),
            checks: vec![CheckSpec {
                reference: "k8s.node_ok".into(),
                program: Program::Shell("true".into()),
                interval: Duration::from_secs(1),
                timeout: Duration::from_millis(500),
                thresholds: Thresholds::default(),
            }],
        })
        .expect("encode")
    }

    #[test]
    fn a_set_verifies_only_signed_by_the_hive_for_this_drone() {
        let hive = key();
        let verifier = RequestVerifier::new(hive.public_key());
        let bytes = set("node-1");
        let signature = hive.sign(&checks::signed_bytes(&bytes));
        let ok = verify_set(&bytes, &signature, &verifier, "node-1", Some("v1"));
        assert_eq!(ok.map(|s| s.checks.len()), Ok(1));
        // Another drone's set, replayed.
        assert_eq!(
            verify_set(&bytes, &signature, &verifier, "node-2", None).err(),
            Some("the check set is for drone \"node-1\", not this one".into())
        );
        // Another version than announced.
        assert!(verify_set(&bytes, &signature, &verifier, "node-1", Some("v2")).is_err());
        // A signature over the bytes without the domain (as an action
        // request's would be) does not verify.
        let bare = hive.sign(&bytes);
        assert!(verify_set(&bytes, &bare, &verifier, "node-1", None).is_err());
        // Another key.
        let forged = key().sign(&checks::signed_bytes(&bytes));
        assert!(verify_set(&bytes, &forged, &verifier, "node-1", None).is_err());
        // Tampered bytes.
        let mut tampered = bytes.clone();
        tampered.extend_from_slice(b" ");
        assert!(verify_set(&tampered, &signature, &verifier, "node-1", None).is_err());
    }
}
