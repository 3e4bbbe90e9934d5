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
#[derive(Debug, Clone)]
pub struct Admit<S> {
    inner: S,
    audience: Audience,
    /// Calls any caller may make; their credential is in the message.
    open_paths: &'static [&'static str],
}

impl<S> Admit<S> {
    /// For the control service: operators only.
    pub fn operators(inner: S) -> Self {
        Admit {
            inner,
            audience: Audience::Operators,
            open_paths: &[],
        }
    }

    /// For the drone service: drones only, and anyone for `Enroll`.
    pub fn drones(inner: S) -> Self {
        Admit {
            inner,
            audience: Audience::Drones,
            open_paths: &[ENROLL_PATH],
        }
    }

    fn admit(&self, caller: &Caller, path: &str) -> Result<(), HiveError> {
        if self.open_paths.contains(&path) {
            return Ok(());
        }
        match (self.audience, caller) {
            (Audience::Operators, Caller::Operator { .. })
            | (Audience::Drones, Caller::Drone { .. }) => Ok(()),
            (Audience::Operators, Caller::Anonymous) => Err(HiveError::unauthenticated(
                "this call needs an operator certificate; point ultronctl at the one `ultron8-hive init` wrote",
            )),
            (Audience::Drones, Caller::Anonymous) => Err(HiveError::unauthenticated(
                "this call needs a drone certificate; join the hive first",
            )),
            (Audience::Operators, other) => Err(HiveError::permission_denied(format!(
                "{other} may not call the control service; only operator certificates may"
            ))),
            (Audience::Drones, other) => Err(HiveError::permission_denied(format!(
                "{other} may not call the drone service; only drone certificates may"
            ))),
        }
    }
}

impl<S, B, ResBody> Service<http::Request<B>> for Admit<S>
where
    S: Service<http::Request<B>, Response = http::Response<ResBody>>,
    ResBody: Default,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Either<S::Future, Ready<Result<S::Response, S::Error>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        let caller = match request.extensions().get::<Caller>() {
            Some(injected) => injected.clone(),
            None => Caller::from(ultron8_transport::caller_identity(request.extensions())),
        };
        match self.admit(&caller, request.uri().path()) {
            Ok(()) => {
                request.extensions_mut().insert(caller);
                Either::Left(self.inner.call(request))
            }
            Err(refusal) => Either::Right(ready(Ok(tonic::Status::from(refusal).into_http()))),
        }
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
            tonic::Status::from(refused).message(),
            "drone:web-1 may not call the control service; only operator certificates may"
        );
        let refused = control
            .admit(&Caller::Anonymous, path)
            .expect_err("anonymous on the control service");
        assert_eq!(
            tonic::Status::from(refused).code(),
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
            tonic::Status::from(refused).code(),
            tonic::Code::PermissionDenied
        );
        let refused = drones
            .admit(&Caller::Anonymous, path)
            .expect_err("anonymous heartbeat");
        assert_eq!(
            tonic::Status::from(refused).code(),
            tonic::Code::Unauthenticated
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
