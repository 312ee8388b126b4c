//! SigV4 signing of export requests for X-Ray's OTLP endpoint (service
//! `xray`, as ADOT's exporters sign), with the credentials Lambda puts in
//! the extension's environment.

use std::time::SystemTime;

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningError, SigningSettings, sign};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;

use super::settings::Signing;

/// The service name X-Ray's OTLP endpoint expects in the credential scope.
pub const SERVICE: &str = "xray";

/// Why a request could not be signed.
#[derive(Debug)]
pub enum SignError {
    /// The signing parameters are incomplete.
    Params(v4::signing_params::BuildError),
    /// The request cannot be signed (e.g. a header value is not text).
    Sign(SigningError),
}

impl std::fmt::Display for SignError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Params(e) => write!(f, "SigV4 parameters: {e}"),
            Self::Sign(e) => write!(f, "SigV4 signing: {e}"),
        }
    }
}

impl std::error::Error for SignError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Params(e) => Some(e),
            Self::Sign(e) => Some(e),
        }
    }
}

/// Adds `Authorization`, `X-Amz-Date` and `X-Amz-Security-Token` to
/// `request`, signing its method, URI, headers and body at `time`.
pub fn sign_request(request: &mut http::Request<bytes::Bytes>, signing: &Signing, time: SystemTime) -> Result<(), SignError> {
    let identity: Identity =
        Credentials::new(&signing.access_key, &signing.secret_key, signing.session_token.clone(), None, "environment").into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(&signing.region)
        .name(SERVICE)
        .time(time)
        .settings(SigningSettings::default())
        .build()
        .map_err(SignError::Params)?
        .into();
    let uri = request.uri().to_string();
    let headers = request.headers().iter().filter_map(|(name, value)| Some((name.as_str(), value.to_str().ok()?)));
    let signable =
        SignableRequest::new(request.method().as_str(), uri, headers, SignableBody::Bytes(request.body())).map_err(SignError::Sign)?;
    let (instructions, _signature) = sign(signable, &params).map_err(SignError::Sign)?.into_parts();
    instructions.apply_to_request_http1x(request);
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn signs_with_the_xray_scope() {
        let signing = Signing {
            region: "eu-west-1".into(),
            access_key: "AKIDEXAMPLE".into(),
            secret_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into(),
            session_token: Some("token".into()),
        };
        let mut request = http::Request::post("https://xray.eu-west-1.amazonaws.com/v1/traces")
            .header("content-type", "application/x-protobuf")
            .body(bytes::Bytes::from_static(b"body"))
            .unwrap();
        let time = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_764_633_600);
        sign_request(&mut request, &signing, time).unwrap();
        let auth = request.headers()["authorization"].to_str().unwrap();
        assert!(auth.starts_with("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20251202/eu-west-1/xray/aws4_request, SignedHeaders="), "{auth}");
        assert!(auth.contains("content-type"), "{auth}");
        assert_eq!(request.headers()["x-amz-date"], "20251202T000000Z");
        assert_eq!(request.headers()["x-amz-security-token"], "token");
        let again = {
            let mut r = http::Request::post("https://xray.eu-west-1.amazonaws.com/v1/traces")
                .header("content-type", "application/x-protobuf")
                .body(bytes::Bytes::from_static(b"other body"))
                .unwrap();
            sign_request(&mut r, &signing, time).unwrap();
            r.headers()["authorization"].to_str().unwrap().to_owned()
        };
        assert_ne!(auth, again, "the body is signed");
    }
}
