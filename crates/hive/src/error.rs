//! The hive's one error vocabulary.
//!
//! Every hive operation fails with a [`HiveError`]: an [`ErrorCode`] saying
//! what kind of failure it is, a message that tells the reader what to do
//! next, and, where a caller can act on it, a typed [`ErrorDetail`]. The
//! code is turned into a gRPC status in one place (`From<HiveError> for
//! tonic::Status`) and into an HTTP response in another (`IntoResponse`);
//! nothing chooses a status by reading a message.

use std::fmt;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use ultron8_core::echo::quote;
use ultron8_core::ids::DroneId;
use ultron8_store::StoreError;

/// What kind of failure an error is: decides the gRPC code and the HTTP
/// status, and whether retrying can help.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// The request itself is wrong (syntax, schema, unknown name in it).
    InvalidArgument,
    /// A thing the request names does not exist.
    NotFound,
    /// The request is well formed but the system's state refuses it now
    /// (no online drone, a downgrade, a dependency).
    FailedPrecondition,
    /// The caller is known but may not do this.
    PermissionDenied,
    /// The caller did not prove who it is.
    Unauthenticated,
    /// A request body larger than the hive accepts.
    TooLarge,
    /// A request that did not arrive in time (a body sent too slowly).
    RequestTimeout,
    /// A dependency (database, broker) is unreachable; retrying later helps.
    Unavailable,
    /// A bug or corrupt data; retrying does not help.
    Internal,
}

impl ErrorCode {
    pub fn grpc_code(self) -> tonic::Code {
        match self {
            ErrorCode::InvalidArgument => tonic::Code::InvalidArgument,
            ErrorCode::NotFound => tonic::Code::NotFound,
            ErrorCode::FailedPrecondition => tonic::Code::FailedPrecondition,
            ErrorCode::PermissionDenied => tonic::Code::PermissionDenied,
            ErrorCode::Unauthenticated => tonic::Code::Unauthenticated,
            ErrorCode::TooLarge => tonic::Code::ResourceExhausted,
            ErrorCode::RequestTimeout => tonic::Code::DeadlineExceeded,
            ErrorCode::Unavailable => tonic::Code::Unavailable,
            ErrorCode::Internal => tonic::Code::Internal,
        }
    }

    /// The HTTP status, following the `google.rpc.Code` mapping (a failed
    /// precondition is a 400 there too), with 413 for an oversized body and
    /// 408 for one that did not arrive in time.
    pub fn http_status(self) -> StatusCode {
        match self {
            ErrorCode::InvalidArgument | ErrorCode::FailedPrecondition => StatusCode::BAD_REQUEST,
            ErrorCode::NotFound => StatusCode::NOT_FOUND,
            ErrorCode::PermissionDenied => StatusCode::FORBIDDEN,
            ErrorCode::Unauthenticated => StatusCode::UNAUTHORIZED,
            ErrorCode::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            ErrorCode::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// What a caller may act on beyond the message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorDetail {
    /// The target matched drones, but none of them is online.
    OfflineDrones {
        target: String,
        offline: Vec<DroneId>,
    },
    /// A pack was refused for its content; nothing was installed. Every
    /// problem, `file:line:column: message`.
    PackProblems { problems: Vec<String> },
}

/// A failed hive operation. `Display` is the whole text a user reads: the
/// message, and a refused pack's problems one per line after it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct HiveError {
    code: ErrorCode,
    message: String,
    detail: Option<ErrorDetail>,
}

/// How many offline drones a message names before it only counts the rest
/// (the typed detail always holds them all).
const OFFLINE_NAMED_IN_MESSAGE: usize = 20;

/// Longest status message sent over gRPC, in bytes before encoding. tonic
/// percent-encodes `grpc-message`, at worst tripling it, and a client's
/// HTTP/2 header-list limit (16 KiB by default in hyper) caps the whole
/// trailer block; past it the client sees only `h2 protocol error`.
const MAX_STATUS_MESSAGE_BYTES: usize = 4096;

impl HiveError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        HiveError {
            code,
            message: message.into(),
            detail: None,
        }
    }

    pub fn invalid_argument(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidArgument, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::NotFound, message)
    }

    pub fn failed_precondition(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::FailedPrecondition, message)
    }

    pub fn permission_denied(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::PermissionDenied, message)
    }

    pub fn unauthenticated(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Unauthenticated, message)
    }

    pub fn too_large(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::TooLarge, message)
    }

    pub fn request_timeout(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::RequestTimeout, message)
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Unavailable, message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Internal, message)
    }

    /// A target that matches no online drone, naming the matching drones
    /// that are offline.
    pub fn no_online_drone(target: &str, offline: Vec<DroneId>) -> Self {
        let mut message = format!("target {} matches no online drone", quote(target));
        if !offline.is_empty() {
            let named: Vec<&str> = offline
                .iter()
                .take(OFFLINE_NAMED_IN_MESSAGE)
                .map(DroneId::as_str)
                .collect();
            message.push_str(&format!(" (offline: {}", named.join(", ")));
            if offline.len() > named.len() {
                message.push_str(&format!(" and {} more", offline.len() - named.len()));
            }
            message.push(')');
        }
        message.push_str("; see `ultronctl drone list`");
        HiveError {
            code: ErrorCode::FailedPrecondition,
            message,
            detail: Some(ErrorDetail::OfflineDrones {
                target: target.to_string(),
                offline,
            }),
        }
    }

    /// A target that matches no drone at all; `hint` (`; did you mean
    /// web-1?`, or empty) offers the closest drone ids.
    pub fn no_drone_matches(target: &str, hint: &str) -> Self {
        let see = if hint.is_empty() {
            "; see `ultronctl drone list`"
        } else {
            " (see `ultronctl drone list`)"
        };
        HiveError {
            code: ErrorCode::FailedPrecondition,
            message: format!(
                "target {} matches no online drone{hint}{see}",
                quote(target)
            ),
            detail: Some(ErrorDetail::OfflineDrones {
                target: target.to_string(),
                offline: Vec::new(),
            }),
        }
    }

    /// A pack refused for its content, with every problem.
    pub fn pack_refused(problems: Vec<String>) -> Self {
        HiveError {
            code: ErrorCode::InvalidArgument,
            message: format!(
                "the pack has {} problem{}; nothing was installed",
                problems.len(),
                if problems.len() == 1 { "" } else { "s" },
            ),
            detail: Some(ErrorDetail::PackProblems { problems }),
        }
    }

    pub fn code(&self) -> ErrorCode {
        self.code
    }

    /// The message alone, without a detail's list.
    pub fn message(&self) -> &str {
        &self.message
    }

    pub fn detail(&self) -> Option<&ErrorDetail> {
        self.detail.as_ref()
    }

    /// The text of a gRPC status: the whole error if it fits in a trailer,
    /// otherwise as many whole lines as fit and a note of what was cut.
    fn status_message(&self) -> String {
        let full = self.to_string();
        if full.len() <= MAX_STATUS_MESSAGE_BYTES {
            return full;
        }
        // Leaves room for the note appended below (well under 160 bytes).
        let budget = MAX_STATUS_MESSAGE_BYTES - 160;
        let mut kept = String::new();
        let mut omitted_lines = 0;
        for line in full.lines() {
            if omitted_lines == 0 && kept.len() + line.len() < budget {
                kept.push_str(line);
                kept.push('\n');
            } else {
                omitted_lines += 1;
            }
        }
        if kept.is_empty() {
            // The first line alone is longer than the budget: cut it at a
            // character boundary.
            let cut = (0..=budget)
                .rev()
                .find(|&i| full.is_char_boundary(i))
                .unwrap_or(0);
            kept.push_str(&full[..cut]);
            kept.push_str("… (cut to fit a gRPC status)");
            return kept;
        }
        match self.detail {
            Some(ErrorDetail::PackProblems { .. }) => kept.push_str(&format!(
                "… and {omitted_lines} more problems; an ultronctl as new as this hive lists them all"
            )),
            _ => kept.push_str(&format!(
                "… ({omitted_lines} more lines cut to fit a gRPC status)"
            )),
        }
        kept
    }
}

impl fmt::Display for HiveError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        if let Some(ErrorDetail::PackProblems { problems }) = &self.detail {
            f.write_str(":")?;
            for problem in problems {
                write!(f, "\n{problem}")?;
            }
        }
        Ok(())
    }
}

/// The one mapping from store failures to what callers see.
impl From<StoreError> for HiveError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::NotFound { kind, id } => {
                HiveError::not_found(format!("{kind} {id} not found"))
            }
            StoreError::JoinTokenInvalid => HiveError::permission_denied(
                "join token is unknown, already used, expired, or made for another drone name; \
                 create a new one with `ultronctl drone token create`",
            ),
            StoreError::DroneEnrolled {
                drone_id,
                enrolled_at,
                certificate_fingerprint,
            } => HiveError::failed_precondition(format!(
                "drone {drone_id} is already in the fleet (enrolled {}, certificate sha256 {}); \
                 a join token does not take over a drone's name. To enroll this host as \
                 {drone_id} in its place (a rebuilt host, a lost key), an admin makes a token \
                 for it: ultronctl drone token create --replace {drone_id}. To free the name: \
                 ultronctl drone remove {drone_id}. The token was not used up.",
                enrolled_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                certificate_fingerprint
                    .get(..16)
                    .unwrap_or(&certificate_fingerprint),
            )),
            StoreError::Database(e) => {
                tracing::error!(error = %e, "database error");
                HiveError::unavailable("the hive cannot reach its database; try again shortly")
            }
            StoreError::Unavailable(reason) => {
                tracing::error!(%reason, "database unavailable");
                HiveError::unavailable(format!(
                    "the hive cannot reach its database ({reason}); try again shortly"
                ))
            }
            other => {
                tracing::error!(error = %other, "store error");
                HiveError::internal(format!("store error: {other}"))
            }
        }
    }
}

/// What a rule or an action job could not be planned for, by kind.
impl From<crate::planning::PlanError> for HiveError {
    fn from(error: crate::planning::PlanError) -> Self {
        use crate::planning::PlanError;
        match error {
            PlanError::Store(e) => e.into(),
            // Without the fleet at hand the offline drones are unknown here;
            // `Hive::submit` names them.
            PlanError::NoOnlineDrone { target } => HiveError::no_online_drone(&target, Vec::new()),
            missing @ PlanError::MissingSecrets { .. } => {
                HiveError::failed_precondition(missing.to_string())
            }
            other @ (PlanError::Parameters(_)
            | PlanError::Template(_)
            | PlanError::InvalidTarget(_)
            | PlanError::MissingTarget { .. }) => HiveError::invalid_argument(other.to_string()),
        }
    }
}

impl From<HiveError> for tonic::Status {
    /// Only the code and a bounded message travel: a gRPC status is an
    /// HTTP/2 trailer, and so would be `grpc-status-details-bin`, so a long
    /// typed detail cannot ride along without breaking the call. Where a
    /// detail's whole content matters (a refused pack's problems), the RPC
    /// returns it in its response message instead.
    fn from(error: HiveError) -> Self {
        tonic::Status::new(error.code.grpc_code(), error.status_message())
    }
}

impl IntoResponse for HiveError {
    /// `{"error": "<message>"}`, plus `"detail"` when there is one.
    fn into_response(self) -> Response {
        let mut body = serde_json::json!({ "error": self.to_string() });
        if let Some(detail) = &self.detail {
            body["detail"] = serde_json::to_value(detail).unwrap_or_default();
        }
        (self.code.http_status(), axum::Json(body)).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_pack_reads_as_its_headline_and_every_problem() {
        let error =
            HiveError::pack_refused(vec!["a.yaml:1:1: bad".into(), "b.yaml:2:3: worse".into()]);
        assert_eq!(
            error.to_string(),
            "the pack has 2 problems; nothing was installed:\na.yaml:1:1: bad\nb.yaml:2:3: worse"
        );
        assert_eq!(error.code(), ErrorCode::InvalidArgument);
    }

    #[test]
    fn offline_drones_are_named_in_the_message_and_all_kept_in_the_detail() {
        let error = HiveError::no_online_drone("web-*", vec!["web-1".into(), "web-2".into()]);
        assert_eq!(
            error.message(),
            "target \"web-*\" matches no online drone (offline: web-1, web-2); see `ultronctl drone list`"
        );
        let many: Vec<DroneId> = (0..25).map(|i| DroneId::new(format!("web-{i}"))).collect();
        let error = HiveError::no_online_drone("web-*", many.clone());
        assert!(
            error.message().contains("web-19 and 5 more)"),
            "{}",
            error.message()
        );
        assert_eq!(
            error.detail(),
            Some(&ErrorDetail::OfflineDrones {
                target: "web-*".into(),
                offline: many
            })
        );
        assert_eq!(
            tonic::Status::from(error).code(),
            tonic::Code::FailedPrecondition
        );
    }

    #[test]
    fn a_status_message_is_cut_at_a_line_to_fit_a_trailer() {
        let problems: Vec<String> = (0..500)
            .map(|i| format!("actions/a{i}.yaml:1:1: something is wrong here"))
            .collect();
        let status = tonic::Status::from(HiveError::pack_refused(problems));
        let message = status.message();
        assert!(
            message.len() <= MAX_STATUS_MESSAGE_BYTES,
            "{}",
            message.len()
        );
        assert!(message.starts_with("the pack has 500 problems; nothing was installed:\n"));
        let shown = message
            .lines()
            .filter(|l| l.starts_with("actions/"))
            .count();
        assert!(
            message.ends_with(&format!(
                "… and {} more problems; an ultronctl as new as this hive lists them all",
                500 - shown
            )),
            "{message}"
        );
    }

    #[test]
    fn one_overlong_line_is_cut_at_a_character_boundary() {
        let status = tonic::Status::from(HiveError::invalid_argument("é".repeat(5000)));
        assert!(status.message().len() <= MAX_STATUS_MESSAGE_BYTES);
        assert!(status.message().ends_with("é… (cut to fit a gRPC status)"));
    }

    #[test]
    fn a_store_that_does_not_answer_is_unavailable_saying_why() {
        let error = HiveError::from(StoreError::Unavailable(
            "the database did not answer within 1s".into(),
        ));
        assert_eq!(error.code(), ErrorCode::Unavailable);
        assert_eq!(
            error.message(),
            "the hive cannot reach its database (the database did not answer within 1s); try again shortly"
        );
    }

    #[test]
    fn codes_map_to_grpc_and_http() {
        let cases = [
            (
                ErrorCode::InvalidArgument,
                tonic::Code::InvalidArgument,
                400,
            ),
            (ErrorCode::NotFound, tonic::Code::NotFound, 404),
            (
                ErrorCode::FailedPrecondition,
                tonic::Code::FailedPrecondition,
                400,
            ),
            (
                ErrorCode::PermissionDenied,
                tonic::Code::PermissionDenied,
                403,
            ),
            (
                ErrorCode::Unauthenticated,
                tonic::Code::Unauthenticated,
                401,
            ),
            (ErrorCode::TooLarge, tonic::Code::ResourceExhausted, 413),
            (
                ErrorCode::RequestTimeout,
                tonic::Code::DeadlineExceeded,
                408,
            ),
            (ErrorCode::Unavailable, tonic::Code::Unavailable, 503),
            (ErrorCode::Internal, tonic::Code::Internal, 500),
        ];
        for (code, grpc, http) in cases {
            assert_eq!(code.grpc_code(), grpc, "{code:?}");
            assert_eq!(code.http_status().as_u16(), http, "{code:?}");
        }
    }
}
