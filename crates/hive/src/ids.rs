//! The ids the hive mints. Jobs, executions, events and audit records are
//! named by a uuid v7, whose text sorts by creation time: listings page by
//! id and show the newest first on that order. (The core's id types make no ids, as the
//! core reads no clock and no random source; a drone's id is the name it
//! joins with.)

use ultron8_core::ids::{EventId, ExecutionId, JobId};
use uuid::Uuid;

pub fn new_job_id() -> JobId {
    JobId::new(Uuid::now_v7().to_string())
}

pub fn new_execution_id() -> ExecutionId {
    ExecutionId::new(Uuid::now_v7().to_string())
}

pub fn new_event_id() -> EventId {
    EventId::new(Uuid::now_v7().to_string())
}

/// Audit records have no id type of their own: nothing refers to one but
/// a listing's page boundary.
pub fn new_audit_id() -> String {
    Uuid::now_v7().to_string()
}
