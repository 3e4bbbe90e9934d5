//! Who is calling a gRPC service, decided once per request, in front of the
//! service rather than in each handler.
//!
//! [`Admit`] wraps a whole service. For every request it reads the identity
//! TLS verified (the client certificate's SAN URI, see
//! `ultron8_pki::identity`), refuses the callers the service does not serve
//! with the service's own message, and puts the [`Caller`] into the
//! request's extensions. Handlers then read it with [`operator`] or
//! [`drone`], which cannot fail for an admitted request.
//!
//! The control service serves operators only; the drone service drones
//! only, except `Enroll`, which anyone may call because its credential is
//! the join token in the message.
//!
//! A request that already carries a [`Caller`] extension keeps it: nothing
//! on the wire can set an extension, only server-side code can, which is
//! how the in-process test harness names its callers without TLS (its
//! connections' `Connected::ConnectInfo` is a `Caller`).

use std::fmt;
use std::task::{Context, Poll};

use futures::future::{Either, Ready, ready};
use tonic::codegen::Service;
use tonic::codegen::http;
use tonic::server::NamedService;
use ultron8_core::ids::DroneId;
use ultron8_core::roles::Role;
use ultron8_pki::PeerIdentity;

use crate::actor::Actor;
use crate::error::HiveError;

/// What TLS proved about the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    Operator {
        name: String,
        role: String,
    },
    Drone {
        id: DroneId,
    },
    /// No client certificate, or one without an Ultron8 identity.
    Anonymous,
}

impl From<Option<PeerIdentity>> for Caller {
    fn from(identity: Option<PeerIdentity>) -> Self {
        match identity {
            Some(PeerIdentity::Operator { name, role }) => Caller::Operator { name, role },
            Some(PeerIdentity::Drone { id }) => Caller::Drone { id: id.into() },
            None => Caller::Anonymous,
        }
    }
}

impl fmt::Display for Caller {
    /// As `PeerIdentity` displays: `operator:alice`, `drone:web-1`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Caller::Operator { name, .. } => write!(f, "operator:{name}"),
            Caller::Drone { id } => write!(f, "drone:{id}"),
            Caller::Anonymous => f.write_str("an anonymous caller"),
        }
    }
}

/// Which callers a service serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Audience {
    Operators,
    Drones,
}

/// The gRPC path of the one call open to anyone: `DroneService.Enroll`.
const ENROLL_PATH: &str = "/ultron8.v1.DroneService/Enroll";

/// A service that admits only its audience (see the module docs).
#[derive(Clone)]
pub struct Admit<S> {
    inner: S,
    audience: Audience,
    /// Calls any caller may make; their credential is in the message.
    open_paths: &'static [&'static str],
    /// Where refusals by role are audited.
    hive: Option<std::sync::Arc<crate::hive::Hive>>,
}

impl<S> fmt::Debug for Admit<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Admit")
            .field("audience", &self.audience)
            .finish_non_exhaustive()
    }
}

/// The least role a control-service method needs (see
/// [`ultron8_core::roles`]): reads for viewers, actions for operators,
/// changes to the hive's catalog and fleet for admins. A method not
/// listed needs admin: a new call is closed until someone decides.
pub fn required_role(path: &str) -> Role {
    let method = path.rsplit('/').next().unwrap_or_default();
    let service = path
        .trim_start_matches('/')
        .split('/')
        .next()
        .unwrap_or_default();
    if service.starts_with("grpc.reflection.") {
        return Role::Viewer;
    }
    match method {
        "ListDrones" | "GetDrone" | "WatchJob" | "FollowJob" | "GetJob" | "ListJobs"
        | "GetExecution" | "ListPacks" | "GetPack" | "ListEvents" | "GetEvent" | "ListRules"
        | "GetRule" | "TestRules" | "ListAudit" | "GetStatus" | "ListActions" | "GetAction"
        | "ResolveId" | "ListOperators" | "ListChecks" | "ListProbes" => Role::Viewer,
        "ListSources" | "FleetSummary" | "FleetServices" | "FleetHealth" => Role::Viewer,
        "SubmitJob" | "RunAction" | "CancelJob" | "FireEvent" | "SetRuleEnabled" => Role::Operator,
        // Names and dates only: operators see which secrets exist, as the
        // packs they run name them; setting, deleting and reading a value
        // stay with admins (not listed).
        "ListSecrets" => Role::Operator,
        // CreateOperator, RevokeOperator, CreateJoinToken, RemoveDrone, ...
        // fall to admin below.
        _ => Role::Admin,
    }
}

impl<S> Admit<S> {
    /// For the control service: operators only.
    pub fn operators(inner: S) -> Self {
        Admit {
            inner,
            audience: Audience::Operators,
            open_paths: &[],
            hive: None,
        }
    }

    /// For the drone service: drones only, and anyone for `Enroll`.
    pub fn drones(inner: S) -> Self {
        Admit {
            inner,
            audience: Audience::Drones,
            open_paths: &[ENROLL_PATH],
            hive: None,
        }
    }

    /// Audits refusals by role in `hive`'s trail, refuses the certificates
    /// `hive` revoked, and has it record operators' certificates.
    pub fn auditing(mut self, hive: std::sync::Arc<crate::hive::Hive>) -> Self {
        self.hive = Some(hive);
        self
    }

    fn admit(&self, caller: &Caller, path: &str) -> Result<(), Refusal> {
        if self.open_paths.contains(&path) {
            return Ok(());
        }
        match (self.audience, caller) {
            (Audience::Operators, Caller::Operator { name, role }) => {
                let needed = required_role(path);
                match role.parse::<Role>() {
                    Ok(held) if held.allows(needed) => Ok(()),
                    held => Err(Refusal::Role {
                        name: name.clone(),
                        held: held.ok(),
                        role: role.clone(),
                        needed,
                        method: path.rsplit('/').next().unwrap_or_default().to_string(),
                    }),
                }
            }
            (Audience::Drones, Caller::Drone { .. }) => Ok(()),
            (Audience::Operators, Caller::Anonymous) => {
                Err(Refusal::Caller(HiveError::unauthenticated(
                    "this call needs an operator certificate; point ultronctl at the one `ultron8-hive init` wrote",
                )))
            }
            (Audience::Drones, Caller::Anonymous) => {
                Err(Refusal::Caller(HiveError::unauthenticated(
                    "this call needs a drone certificate; join the hive first",
                )))
            }
            (Audience::Operators, other) => Err(Refusal::Caller(HiveError::permission_denied(
                format!("{other} may not call the control service; only operator certificates may"),
            ))),
            (Audience::Drones, other) => Err(Refusal::Caller(HiveError::permission_denied(
                format!("{other} may not call the drone service; only drone certificates may"),
            ))),
        }
    }
}

/// Why a request was not admitted.
#[derive(Debug)]
enum Refusal {
    /// The wrong kind of caller, or none.
    Caller(HiveError),
    /// An operator whose role does not allow the call: audited.
    Role {
        name: String,
        /// `None` when the certificate's role is not one the hive knows.
        held: Option<Role>,
        role: String,
        needed: Role,
        method: String,
    },
}

impl Refusal {
    fn error(&self) -> HiveError {
        match self {
            Refusal::Caller(error) => error.clone(),
            Refusal::Role {
                name,
                held: Some(_),
                role,
                needed,
                method,
            } => HiveError::permission_denied(format!(
                "operator {name} has the {role} role; {method} needs {needed} (ask an admin for a certificate with that role: ultron8-hive operator create)"
            )),
            Refusal::Role {
                name,
                held: None,
                role,
                ..
            } => HiveError::permission_denied(format!(
                "operator {name}'s certificate names the role {role:?}, which this hive does not know (viewer, operator, admin)"
            )),
        }
    }
}

impl From<Refusal> for HiveError {
    fn from(refusal: Refusal) -> HiveError {
        refusal.error()
    }
}

impl<S, B, ResBody> Service<http::Request<B>> for Admit<S>
where
    S: Service<http::Request<B>, Response = http::Response<ResBody>>,
    S::Error: Send + 'static,
    ResBody: Default + Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Either<
        S::Future,
        Either<
            Ready<Result<S::Response, S::Error>>,
            futures::future::BoxFuture<'static, Result<S::Response, S::Error>>,
        >,
    >;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        let caller = match request.extensions().get::<Caller>() {
            Some(injected) => injected.clone(),
            None => Caller::from(ultron8_transport::caller_identity(request.extensions())),
        };
        let certificate = ultron8_transport::caller_certificate(request.extensions());
        if let (Some(hive), Some(certificate)) = (&self.hive, &certificate) {
            // The handshake refuses revoked certificates; this refuses them
            // on connections opened before they were revoked.
            let fingerprint = ultron8_pki::fingerprint(certificate);
            if hive.revoked.contains(&fingerprint) {
                tracing::warn!(%caller, %fingerprint, "refused a call with a revoked certificate");
                let status = tonic::Status::from(HiveError::unauthenticated(format!(
                    "the certificate of {caller} (sha256 {}) was revoked; ask an admin for a new one",
                    fingerprint.get(..16).unwrap_or(&fingerprint)
                )));
                return Either::Right(Either::Left(ready(Ok(status.into_http()))));
            }
        }
        match self.admit(&caller, request.uri().path()) {
            Ok(()) => {
                if let (Some(hive), Some(certificate), Caller::Operator { name, role }) =
                    (&self.hive, certificate, &caller)
                {
                    record_operator(hive, name, role, certificate);
                }
                request.extensions_mut().insert(caller);
                Either::Left(self.inner.call(request))
            }
            Err(refusal) => {
                let status = tonic::Status::from(refusal.error());
                match (&refusal, &self.hive) {
                    (
                        Refusal::Role {
                            name,
                            role,
                            needed,
                            method,
                            ..
                        },
                        Some(hive),
                    ) => {
                        let hive = hive.clone();
                        let mut audit = hive.audit(
                            Actor::Operator(name.clone()),
                            ultron8_core::audit::AuditVerb::OperatorDenied,
                            serde_json::json!({ "method": method, "role": role, "needed": needed.as_str() }),
                        );
                        audit.status = None;
                        tracing::warn!(operator = %name, %role, needed = %needed, %method, "call denied by role");
                        Either::Right(Either::Right(Box::pin(async move {
                            if let Err(e) = hive.store.append_audit(&audit).await {
                                tracing::warn!(error = %e, "cannot audit a denied call");
                            }
                            Ok(status.into_http())
                        })))
                    }
                    _ => Either::Right(Either::Left(ready(Ok(status.into_http())))),
                }
            }
        }
    }
}

/// Ends `stream` (a long-lived answer such as a job follower) with
/// `Unauthenticated` once the certificate of the connection it was opened
/// on is revoked, within a second: revocation refuses new calls at once,
/// and this closes the ones already streaming. A caller without a
/// certificate (the in-process test harness) is streamed to as it is.
pub fn until_revoked<T: Send + 'static>(
    hive: std::sync::Arc<crate::hive::Hive>,
    certificate: Option<Vec<u8>>,
    stream: futures::stream::BoxStream<'static, Result<T, tonic::Status>>,
) -> futures::stream::BoxStream<'static, Result<T, tonic::Status>> {
    use futures::StreamExt;
    let Some(certificate) = certificate else {
        return stream;
    };
    let fingerprint = ultron8_pki::fingerprint(&certificate);
    let watched = hive.clone();
    let watched_fingerprint = fingerprint.clone();
    let revoked = async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
        loop {
            tick.tick().await;
            if watched.revoked.contains(&watched_fingerprint) {
                return;
            }
        }
    };
    let notice = futures::stream::once(async move {
        hive.revoked.contains(&fingerprint).then(|| {
            Err(tonic::Status::from(HiveError::unauthenticated(
                "this certificate was revoked while the stream was open; ask an admin for a new one",
            )))
        })
    })
    .filter_map(futures::future::ready);
    stream.take_until(revoked).chain(notice).boxed()
}

/// Has `hive` record an operator certificate it has not seen yet, without
/// holding up the call.
fn record_operator(hive: &std::sync::Arc<crate::hive::Hive>, name: &str, role: &str, der: Vec<u8>) {
    let fingerprint = ultron8_pki::fingerprint(&der);
    let seen = match hive.operators_recorded.lock() {
        Ok(recorded) => recorded.contains(&fingerprint),
        Err(poisoned) => poisoned.into_inner().contains(&fingerprint),
    };
    if !seen {
        let hive = hive.clone();
        let (name, role) = (name.to_string(), role.to_string());
        tokio::spawn(async move { hive.note_operator_certificate(&name, &role, &der).await });
    }
}

impl<S: NamedService> NamedService for Admit<S> {
    const NAME: &'static str = S::NAME;
}

/// The operator behind a request the control service admitted.
pub fn operator<T>(request: &tonic::Request<T>) -> Result<Actor, tonic::Status> {
    match request.extensions().get::<Caller>() {
        Some(Caller::Operator { name, .. }) => Ok(Actor::Operator(name.clone())),
        _ => Err(not_admitted()),
    }
}

/// The id of the drone behind a request the drone service admitted.
pub fn drone<T>(request: &tonic::Request<T>) -> Result<DroneId, tonic::Status> {
    match request.extensions().get::<Caller>() {
        Some(Caller::Drone { id }) => Ok(id.clone()),
        _ => Err(not_admitted()),
    }
}

/// A handler reached without its `Admit` layer, or with the wrong one: a
/// wiring bug, refused rather than served unchecked.
fn not_admitted() -> tonic::Status {
    tracing::error!("a request reached a handler without passing the caller check");
    HiveError::internal("the hive could not check who is calling").into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn operator_caller() -> Caller {
        Caller::Operator {
            name: "alice".into(),
            role: "admin".into(),
        }
    }

    #[test]
    fn each_service_admits_its_audience_and_refuses_others_as_before() {
        let control = Admit::operators(());
        let drones = Admit::drones(());
        let path = "/ultron8.v1.ControlService/ListJobs";
        assert!(control.admit(&operator_caller(), path).is_ok());
        let refused = control
            .admit(&Caller::Drone { id: "web-1".into() }, path)
            .expect_err("a drone on the control service");
        assert_eq!(
            tonic::Status::from(HiveError::from(refused)).message(),
            "drone:web-1 may not call the control service; only operator certificates may"
        );
        let refused = control
            .admit(&Caller::Anonymous, path)
            .expect_err("anonymous on the control service");
        assert_eq!(
            tonic::Status::from(HiveError::from(refused)).code(),
            tonic::Code::Unauthenticated
        );

        let path = "/ultron8.v1.DroneService/Heartbeat";
        assert!(
            drones
                .admit(&Caller::Drone { id: "web-1".into() }, path)
                .is_ok()
        );
        let refused = drones
            .admit(&operator_caller(), path)
            .expect_err("an operator on the drone service");
        assert_eq!(
            tonic::Status::from(HiveError::from(refused)).code(),
            tonic::Code::PermissionDenied
        );
        let refused = drones
            .admit(&Caller::Anonymous, path)
            .expect_err("anonymous heartbeat");
        assert_eq!(
            tonic::Status::from(HiveError::from(refused)).code(),
            tonic::Code::Unauthenticated
        );
    }

    #[test]
    fn a_role_allows_its_calls_and_refuses_the_rest_naming_what_is_needed() {
        let control = Admit::operators(());
        let as_role = |role: &str| Caller::Operator {
            name: "bob".into(),
            role: role.into(),
        };
        let list = "/ultron8.v1.ControlService/ListJobs";
        let submit = "/ultron8.v1.ControlService/SubmitJob";
        let install = "/ultron8.v1.ControlService/InstallPack";
        assert!(control.admit(&as_role("viewer"), list).is_ok());
        let refused = control
            .admit(&as_role("viewer"), submit)
            .expect_err("a viewer may not run");
        let status = tonic::Status::from(HiveError::from(refused));
        assert_eq!(status.code(), tonic::Code::PermissionDenied);
        assert!(
            status
                .message()
                .starts_with("operator bob has the viewer role; SubmitJob needs operator"),
            "{status:?}"
        );
        assert!(control.admit(&as_role("operator"), submit).is_ok());
        assert!(control.admit(&as_role("operator"), install).is_err());
        assert!(control.admit(&as_role("admin"), install).is_ok());
        // A role the hive does not know allows nothing.
        let refused = control
            .admit(&as_role("root"), list)
            .expect_err("an unknown role");
        assert!(
            tonic::Status::from(HiveError::from(refused))
                .message()
                .contains("which this hive does not know"),
        );
    }

    #[test]
    fn every_control_method_needs_a_deliberate_role() {
        use ultron8_core::roles::Role::*;
        for (method, role) in [
            ("GetStatus", Viewer),
            ("FollowJob", Viewer),
            ("ListAudit", Viewer),
            ("CancelJob", Operator),
            ("FireEvent", Operator),
            ("CreateJoinToken", Admin),
            ("RemovePack", Admin),
            ("ListSources", Viewer),
            ("FleetSummary", Viewer),
            ("FleetServices", Viewer),
            ("FleetHealth", Viewer),
            ("AddSource", Admin),
            ("RemoveSource", Admin),
            ("SomethingNew", Admin),
        ] {
            assert_eq!(
                required_role(&format!("/ultron8.v1.ControlService/{method}")),
                role,
                "{method}"
            );
        }
        assert_eq!(
            required_role("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"),
            Viewer
        );
    }

    #[test]
    fn anyone_may_enroll() {
        let drones = Admit::drones(());
        for caller in [
            Caller::Anonymous,
            operator_caller(),
            Caller::Drone { id: "x".into() },
        ] {
            assert!(drones.admit(&caller, ENROLL_PATH).is_ok(), "{caller}");
        }
        // The path is the generated service's.
        assert!(ENROLL_PATH.starts_with(&format!(
            "/{}/",
            <ultron8_proto::v1::drone_service_server::DroneServiceServer<
                crate::drone_service::DroneApi,
            > as NamedService>::NAME
        )));
    }
}
