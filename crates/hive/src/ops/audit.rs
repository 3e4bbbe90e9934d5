//! Reading the audit trail (it is written by the operations it records).

use ultron8_store::{AuditFilter, AuditRecord};

use crate::error::HiveError;
use crate::hive::Hive;

impl Hive {
    pub async fn list_audit(&self, filter: &AuditFilter) -> Result<Vec<AuditRecord>, HiveError> {
        Ok(self.store.list_audit(filter).await?)
    }
}
