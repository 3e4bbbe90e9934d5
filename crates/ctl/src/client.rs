//! Connecting to the hive, and turning gRPC failures into messages that
//! say what to do next.

use anyhow::Context;
use tonic::transport::Channel;
use ultron8_proto::v1::control_service_client::ControlServiceClient;

use crate::config::CtlConfig;

pub type Client = ControlServiceClient<Channel>;

pub async fn connect(config: &CtlConfig) -> anyhow::Result<Client> {
    let read = |path: &std::path::Path| {
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
    };
    let first_cert = |pem: String, path: &std::path::Path| -> anyhow::Result<Vec<u8>> {
        ultron8_pki::pem_to_der_certs(&pem)
            .with_context(|| format!("{} holds no certificate", path.display()))?
            .into_iter()
            .next()
            .with_context(|| format!("{} holds no certificate", path.display()))
    };
    let ca = first_cert(read(&config.ca)?, &config.ca)?;
    let cert = first_cert(read(&config.cert)?, &config.cert)?;
    let key = read(&config.key)?;
    let tls = ultron8_transport::client_config(&ca, &cert, &key)?;
    let channel = ultron8_transport::connect(&config.hive, &config.server_name(), tls)
        .await
        .with_context(|| {
            format!(
                "cannot reach the hive at {}; is `ultron8-hive serve` running there?",
                config.hive
            )
        })?;
    Ok(ControlServiceClient::new(channel))
}

/// A failed call as an error whose message is the hive's own explanation.
pub fn call_failed(status: tonic::Status) -> anyhow::Error {
    use tonic::Code;
    let message = status.message().to_string();
    // TLS 1.3 clients learn that the hive refused their certificate only on
    // their first call, as an alert under a client-side error.
    let causes = sources(&status);
    if causes.contains("CertificateRevoked") {
        return anyhow::anyhow!(
            "the hive refused this certificate: it was revoked. Ask an admin for a new one \
             (ultronctl operator create)"
        );
    }
    if causes.contains("received fatal alert") {
        return anyhow::anyhow!("the hive refused the TLS connection: {causes}");
    }
    // A status with a source was made here, by the client, not sent by the
    // hive: the connection failed. The alert that says why may be lost to
    // a connection torn down first, so name the likely causes.
    if std::error::Error::source(&status).is_some()
        && matches!(
            status.code(),
            Code::Unknown | Code::Unavailable | Code::Cancelled | Code::Internal
        )
    {
        return anyhow::anyhow!(
            "the connection to the hive failed ({message}: {causes}). If this persists, the hive \
             refuses this certificate: revoked, expired, or issued by another hive's CA (the \
             hive's log says which)"
        );
    }
    match status.code() {
        Code::Unavailable => anyhow::anyhow!("the hive is unavailable: {message}"),
        Code::Unauthenticated | Code::PermissionDenied => anyhow::anyhow!("not allowed: {message}"),
        Code::DeadlineExceeded => anyhow::anyhow!("the hive did not answer in time: {message}"),
        _ => anyhow::anyhow!(message),
    }
}

/// The error's sources, joined with ": ".
fn sources(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = Vec::new();
    let mut source = error.source();
    while let Some(e) = source {
        text.push(e.to_string());
        source = e.source();
    }
    text.join(": ")
}
