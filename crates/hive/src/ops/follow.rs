//! Following a job as it runs: each execution's output as it arrives, and
//! its status changes, for `ultronctl run` and `ultronctl job logs -f`.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::broadcast::error::RecvError;
use tokio_stream::wrappers::ReceiverStream;
use ultron8_core::ExecutionStatus;
use ultron8_core::ids::{DroneId, ExecutionId, JobId};
use ultron8_store::{ExecutionRecord, OutputChunkRecord, OutputStreamKind};

use crate::error::HiveError;
use crate::hive::Hive;

/// Re-read everything at least this often: output and states stored by
/// other replicas do not wake this one.
const FOLLOW_POLL: Duration = Duration::from_millis(500);

/// What a follower sees, in order: an execution's output before the status
/// that ends it.
#[derive(Debug, Clone, PartialEq)]
pub enum JobEvent {
    /// An execution's state, when first seen and whenever it changes.
    Execution(ExecutionRecord),
    /// New output of an execution (of `drone_id`), at `chunk.offset` of its
    /// stream.
    Output {
        drone_id: DroneId,
        chunk: OutputChunkRecord,
    },
}

/// How far one execution has been sent.
#[derive(Debug, Default)]
struct Sent {
    status: Option<ExecutionStatus>,
    stdout: u64,
    stderr: u64,
    /// Terminal, and its whole output sent.
    done: bool,
}

impl Sent {
    fn offset(&mut self, stream: OutputStreamKind) -> &mut u64 {
        match stream {
            OutputStreamKind::Stdout => &mut self.stdout,
            OutputStreamKind::Stderr => &mut self.stderr,
        }
    }
}

impl Hive {
    /// The job's executions (all, or `drone`'s) with their output so far,
    /// then, with `follow`, new output and status changes as they happen,
    /// until every execution is finished. Output that only the final result
    /// carries (a chunk lost on the way) is sent when the execution ends.
    pub async fn follow_job(
        self: &Arc<Self>,
        job_id: &JobId,
        drone: Option<DroneId>,
        follow: bool,
    ) -> Result<ReceiverStream<Result<JobEvent, HiveError>>, HiveError> {
        let job = self.get_job(job_id).await?;
        if let Some(drone) = &drone
            && !job.executions.iter().any(|e| e.drone_id == *drone)
        {
            return Err(HiveError::not_found(format!(
                "job {job_id} has no execution on drone {drone}"
            )));
        }
        let (tx, rx) = tokio::sync::mpsc::channel(256);
        let hive = self.clone();
        let job_id = job_id.clone();
        tokio::spawn(async move {
            let mut notices = hive.output_arrived.subscribe();
            let mut sent: HashMap<ExecutionId, Sent> = HashMap::new();
            // Executions with output this replica stored since the last
            // pass; `None`: read every running one.
            let mut dirty: Option<HashSet<ExecutionId>> = None;
            loop {
                let changed = hive.executions_changed.notified();
                let executions = match hive.store.get_job(&job_id).await {
                    Ok(Some(job)) => job.executions,
                    Ok(None) => return,
                    Err(e) => {
                        let _ = tx.send(Err(e.into())).await;
                        return;
                    }
                };
                let mut finished = true;
                for execution in executions
                    .iter()
                    .filter(|e| drone.as_ref().is_none_or(|d| e.drone_id == *d))
                {
                    let state = sent.entry(execution.id.clone()).or_default();
                    finished &= execution.status.is_terminal();
                    let events = match hive.pass(execution, state, dirty.as_ref()).await {
                        Ok(events) => events,
                        Err(e) => {
                            let _ = tx.send(Err(e)).await;
                            return;
                        }
                    };
                    for event in events {
                        if tx.send(Ok(event)).await.is_err() {
                            return; // the follower went away
                        }
                    }
                }
                if finished || !follow {
                    return;
                }
                let mut woken: HashSet<ExecutionId> = HashSet::new();
                let read_all = tokio::select! {
                    _ = changed => false,
                    notice = notices.recv() => match notice {
                        Ok(id) => { woken.insert(id); false }
                        Err(RecvError::Lagged(_)) => true,
                        Err(RecvError::Closed) => return,
                    },
                    _ = tokio::time::sleep(FOLLOW_POLL) => true,
                    _ = tx.closed() => return,
                    _ = hive.stopping.cancelled() => {
                        let _ = tx.send(Err(hive.shutting_down(&job_id))).await;
                        return;
                    }
                };
                // Take every notice already queued, so a burst of output
                // costs one pass.
                let mut lagged = read_all;
                loop {
                    match notices.try_recv() {
                        Ok(id) => {
                            woken.insert(id);
                        }
                        Err(tokio::sync::broadcast::error::TryRecvError::Lagged(_)) => {
                            lagged = true
                        }
                        Err(_) => break,
                    }
                }
                dirty = (!lagged).then_some(woken);
            }
        });
        Ok(ReceiverStream::new(rx))
    }

    /// What one pass sends for one execution: its new output, then its
    /// status if that changed.
    async fn pass(
        &self,
        execution: &ExecutionRecord,
        sent: &mut Sent,
        dirty: Option<&HashSet<ExecutionId>>,
    ) -> Result<Vec<JobEvent>, HiveError> {
        let mut events = Vec::new();
        if sent.done {
            return Ok(events);
        }
        let terminal = execution.status.is_terminal();
        let may_have_output = execution.status == ExecutionStatus::Running || terminal;
        let first_look = sent.status.is_none();
        let worth_reading =
            first_look || terminal || dirty.is_none_or(|dirty| dirty.contains(&execution.id));
        if may_have_output && worth_reading {
            let chunks = self
                .store
                .execution_output_from(&execution.id, sent.stdout, sent.stderr)
                .await?;
            for chunk in chunks {
                let offset = sent.offset(chunk.stream);
                if chunk.offset > *offset {
                    // A gap: a chunk still on its way. Its successors wait
                    // for it (or for the final result).
                    continue;
                }
                let end = chunk.offset + chunk.data.len() as u64;
                if end <= *offset {
                    continue;
                }
                let skip = (*offset - chunk.offset) as usize;
                *offset = end;
                events.push(JobEvent::Output {
                    drone_id: execution.drone_id.clone(),
                    chunk: OutputChunkRecord {
                        offset: chunk.offset + skip as u64,
                        data: chunk.data[skip..].to_vec(),
                        ..chunk
                    },
                });
            }
        }
        if terminal {
            // The final result holds the whole captured output: send what
            // the live chunks did not.
            for (stream, bytes) in [
                (OutputStreamKind::Stdout, &execution.result.stdout),
                (OutputStreamKind::Stderr, &execution.result.stderr),
            ] {
                let offset = sent.offset(stream);
                if (bytes.len() as u64) > *offset {
                    let from = *offset as usize;
                    events.push(JobEvent::Output {
                        drone_id: execution.drone_id.clone(),
                        chunk: OutputChunkRecord {
                            execution_id: execution.id.clone(),
                            stream,
                            offset: *offset,
                            data: bytes[from..].to_vec(),
                        },
                    });
                    *offset = bytes.len() as u64;
                }
            }
            sent.done = true;
        }
        if sent.status != Some(execution.status) {
            sent.status = Some(execution.status);
            events.push(JobEvent::Execution(execution.clone()));
        }
        Ok(events)
    }
}
