//! WorkerService's check: with `--join-token-file`, a stream must present the cluster's join
//! token (`authorization: Bearer TOKEN`, see `reelfarm_proto::auth`). The check is an
//! interceptor: it sees the request's headers before the service reads the stream's first
//! message, so a process without the token never gets as far as registering.

use prometheus::IntCounter;
use reelfarm_proto::auth::{JoinToken, AUTHORIZATION};
use tonic::service::Interceptor;
use tonic::{Request, Status};

/// The credential check of WorkerService: the join token, or (with `--client-ca`) a client
/// certificate the CA signed, whose names then bind the worker's id (checked at register).
/// Admits every stream when the cluster requires neither.
#[derive(Clone)]
pub(crate) struct JoinTokenCheck {
    token: Option<JoinToken>,
    /// `--client-ca` is set: a verified client certificate is a credential.
    mtls: bool,
    refused: IntCounter,
}

impl JoinTokenCheck {
    pub(crate) fn new(token: Option<JoinToken>, mtls: bool, refused: IntCounter) -> Self {
        Self {
            token,
            mtls,
            refused,
        }
    }
}

impl Interceptor for JoinTokenCheck {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        // rustls verified the certificate against --client-ca in the handshake.
        if self.mtls && request.peer_certs().is_some_and(|c| !c.is_empty()) {
            return Ok(request);
        }
        let Some(token) = &self.token else {
            if self.mtls {
                self.refused.inc();
                return Err(Status::unauthenticated(
                    "WorkerService needs a client certificate signed by the cluster's CA \
                     (the worker's --tls-cert and --tls-key)",
                ));
            }
            return Ok(request);
        };
        let header = request
            .metadata()
            .get(AUTHORIZATION)
            .map(|v| v.to_str().unwrap_or(""));
        let refusal = match header {
            None => {
                "WorkerService needs the cluster's join token: send `authorization: Bearer \
                     TOKEN` (the worker's --join-token-file)"
            }
            Some(h) if !token.admits(h) => {
                "the join token presented is not this cluster's (check the worker's \
                 --join-token-file)"
            }
            Some(_) => return Ok(request),
        };
        self.refused.inc();
        tracing::warn!(peer = ?request.remote_addr(), reason = refusal, "worker stream refused");
        Err(Status::unauthenticated(refusal))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(header: Option<&str>) -> Request<()> {
        let mut r = Request::new(());
        if let Some(h) = header {
            r.metadata_mut().insert(AUTHORIZATION, h.parse().unwrap());
        }
        r
    }

    #[test]
    fn a_stream_without_the_join_token_is_refused_and_counted() {
        let token = JoinToken::parse(&"7".repeat(40)).unwrap();
        let refused = IntCounter::new("t", "t").unwrap();
        let mut check = JoinTokenCheck::new(Some(token.clone()), false, refused.clone());
        assert!(check.call(request(Some(&token.bearer()))).is_ok());
        let e = check.call(request(None)).unwrap_err();
        assert_eq!(e.code(), tonic::Code::Unauthenticated);
        assert!(e.message().contains("join token"), "{e:?}");
        let e = check
            .call(request(Some(&format!("Bearer {}", "8".repeat(40)))))
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::Unauthenticated);
        assert_eq!(refused.get(), 2);
        // A cluster without a token admits every stream.
        let mut open = JoinTokenCheck::new(None, false, refused.clone());
        assert!(open.call(request(None)).is_ok());
    }
}
