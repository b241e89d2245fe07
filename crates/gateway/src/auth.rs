//! Data-plane authentication, per route: static bearer tokens or JSON Web Tokens.
//!
//! Keys and tokens are read when the configuration is (re)loaded, so rotating a JWKS file or a token
//! list takes a reload (`SIGHUP`, `POST /admin/reload` or the config watcher), never a restart.
//!
//! Failures answer in the JSON error format with RFC 6750 `WWW-Authenticate` headers: a missing,
//! malformed, badly signed or expired token is 401; a valid token that is not meant for this route
//! (wrong issuer or audience) is 403.

use std::collections::HashSet;
use std::path::Path;

use http::{HeaderMap, HeaderValue, StatusCode, header};
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation, errors::ErrorKind};
use switchyard_config::{AuthMode, BearerSpec, JwtSpec, RouteSpec, resolve};

use crate::error::ApiError;

/// The verified claims of a request's JWT.
pub type Claims = serde_json::Map<String, serde_json::Value>;

/// A route's authenticator.
pub enum Auth {
    /// Static tokens, kept as SHA-256 digests (the comparison leaks nothing about a token).
    Bearer(HashSet<[u8; 32]>),
    /// JWT verification.
    Jwt(Box<Jwt>),
}

/// JWT keys and checks.
pub struct Jwt {
    keys: Vec<JwtKey>,
    issuer: Option<String>,
    audience: Vec<String>,
    leeway_s: u64,
}

struct JwtKey {
    kid: Option<String>,
    alg: Algorithm,
    key: DecodingKey,
}

/// An authentication failure, as answered to the client.
#[derive(Debug)]
pub struct Denied {
    /// The JSON error.
    pub error: ApiError,
    /// The `WWW-Authenticate` challenge.
    pub challenge: HeaderValue,
}

impl Denied {
    fn unauthorized(code: &'static str, message: impl Into<String>) -> Self {
        let message = message.into();
        let challenge = if code == "unauthorized" {
            "Bearer realm=\"switchyard\"".to_string()
        } else {
            format!(
                "Bearer realm=\"switchyard\", error=\"invalid_token\", error_description=\"{}\"",
                message.replace(['"', '\\'], "'")
            )
        };
        Self {
            error: ApiError::new(StatusCode::UNAUTHORIZED, code, message),
            challenge: HeaderValue::from_str(&challenge)
                .unwrap_or(HeaderValue::from_static("Bearer")),
        }
    }

    fn forbidden(message: impl Into<String>) -> Self {
        Self {
            error: ApiError::new(StatusCode::FORBIDDEN, "forbidden", message),
            challenge: HeaderValue::from_static(
                "Bearer realm=\"switchyard\", error=\"insufficient_scope\"",
            ),
        }
    }

    /// The full response.
    pub fn into_response(self) -> http::Response<axum::body::Body> {
        let mut resp = self.error.into_response();
        resp.headers_mut()
            .insert(header::WWW_AUTHENTICATE, self.challenge);
        resp
    }
}

impl Auth {
    /// The authenticator of `route` (`None` for `auth = "none"`); reads key and token files.
    pub fn from_spec(route: &RouteSpec, base_dir: Option<&Path>) -> anyhow::Result<Option<Self>> {
        match route.auth {
            AuthMode::None => Ok(None),
            AuthMode::Bearer => {
                let spec = route.bearer.clone().unwrap_or_default();
                Ok(Some(Auth::Bearer(bearer_tokens(&spec, base_dir)?)))
            }
            AuthMode::Jwt => {
                let spec = route.jwt.clone().unwrap_or_default();
                Ok(Some(Auth::Jwt(Box::new(Jwt::from_spec(&spec, base_dir)?))))
            }
        }
    }

    /// Checks the request's `Authorization` header (or, for a WebSocket upgrade only, its
    /// `access_token` query parameter); a JWT's claims are returned for sticky keys.
    pub fn check(&self, headers: &HeaderMap, uri: &http::Uri) -> Result<Option<Claims>, Denied> {
        let query_token = websocket_query_token(headers, uri);
        let token = match &query_token {
            Some(t) if !headers.contains_key(header::AUTHORIZATION) => t.as_ref(),
            _ => bearer(headers)?,
        };
        match self {
            Auth::Bearer(digests) => {
                if digests.contains(&sha256(token.as_bytes())) {
                    Ok(None)
                } else {
                    Err(Denied::unauthorized(
                        "invalid_token",
                        "unknown bearer token",
                    ))
                }
            }
            Auth::Jwt(jwt) => jwt.verify(token).map(Some),
        }
    }
}

fn sha256(data: &[u8]) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, data);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// The `access_token` query parameter (RFC 6750 §2.3) of a WebSocket upgrade request. Browsers
/// cannot set headers on a WebSocket, so this is the only way a web page can authenticate a stream.
/// Ordinary requests must use the header: a token in a URL ends up in logs and browser history.
fn websocket_query_token<'u>(
    headers: &HeaderMap,
    uri: &'u http::Uri,
) -> Option<std::borrow::Cow<'u, str>> {
    let upgrade = headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    if !upgrade {
        return None;
    }
    form_urlencoded::parse(uri.query()?.as_bytes())
        .find(|(k, v)| k == "access_token" && !v.trim().is_empty())
        .map(|(_, v)| v)
}

/// The token of `Authorization: Bearer <token>`.
fn bearer(headers: &HeaderMap) -> Result<&str, Denied> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Err(Denied::unauthorized(
            "unauthorized",
            "this route needs `Authorization: Bearer <token>`",
        ));
    };
    let text = value.to_str().unwrap_or("");
    match text.split_once(' ') {
        Some((scheme, token))
            if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() =>
        {
            Ok(token.trim())
        }
        _ => Err(Denied::unauthorized(
            "invalid_token",
            "the Authorization header is not `Bearer <token>`",
        )),
    }
}

fn bearer_tokens(spec: &BearerSpec, base_dir: Option<&Path>) -> anyhow::Result<HashSet<[u8; 32]>> {
    let mut tokens: Vec<String> = spec.tokens.clone();
    if let Some(var) = &spec.tokens_env {
        let v = std::env::var(var)
            .map_err(|_| anyhow::anyhow!("bearer.tokens_env: `{var}` is not set"))?;
        tokens.extend(v.split(',').map(|t| t.trim().to_string()));
    }
    if let Some(file) = &spec.tokens_file {
        let path = resolve(base_dir, file);
        let text = std::fs::read_to_string(&path)
            .map_err(|e| anyhow::anyhow!("bearer.tokens_file `{}`: {e}", path.display()))?;
        tokens.extend(
            text.lines()
                .map(str::trim)
                .filter(|l| !l.starts_with('#'))
                .map(String::from),
        );
    }
    let set: HashSet<[u8; 32]> = tokens
        .iter()
        .filter(|t| !t.is_empty())
        .map(|t| sha256(t.as_bytes()))
        .collect();
    anyhow::ensure!(
        !set.is_empty(),
        "auth = \"bearer\" but no token is configured"
    );
    Ok(set)
}

impl Jwt {
    /// Loads the key(s) of `spec`.
    pub fn from_spec(spec: &JwtSpec, base_dir: Option<&Path>) -> anyhow::Result<Self> {
        let mut keys = Vec::new();
        let secret = match (&spec.secret, &spec.secret_env) {
            (Some(s), _) => Some(s.clone()),
            (None, Some(var)) => Some(
                std::env::var(var)
                    .map_err(|_| anyhow::anyhow!("jwt.secret_env: `{var}` is not set"))?,
            ),
            (None, None) => None,
        };
        if let Some(secret) = secret {
            anyhow::ensure!(
                secret.len() >= 32,
                "jwt: an HS256 secret must be at least 32 bytes"
            );
            keys.push(JwtKey {
                kid: None,
                alg: Algorithm::HS256,
                key: DecodingKey::from_secret(secret.as_bytes()),
            });
        }
        if let Some(file) = &spec.public_key {
            let path = resolve(base_dir, file);
            let pem = std::fs::read(&path)
                .map_err(|e| anyhow::anyhow!("jwt.public_key `{}`: {e}", path.display()))?;
            let key = match DecodingKey::from_rsa_pem(&pem) {
                Ok(k) => JwtKey {
                    kid: None,
                    alg: Algorithm::RS256,
                    key: k,
                },
                Err(_) => JwtKey {
                    kid: None,
                    alg: Algorithm::ES256,
                    key: DecodingKey::from_ec_pem(&pem).map_err(|e| {
                        anyhow::anyhow!(
                            "jwt.public_key `{}` is neither an RSA nor an EC P-256 public key: {e}",
                            path.display()
                        )
                    })?,
                },
            };
            keys.push(key);
        }
        if let Some(file) = &spec.jwks {
            let path = resolve(base_dir, file);
            let text = std::fs::read_to_string(&path)
                .map_err(|e| anyhow::anyhow!("jwt.jwks `{}`: {e}", path.display()))?;
            let set: JwkSet = serde_json::from_str(&text)
                .map_err(|e| anyhow::anyhow!("jwt.jwks `{}`: {e}", path.display()))?;
            for jwk in &set.keys {
                // The algorithm follows from the key type; RS256 and ES256 are supported.
                let alg = match &jwk.algorithm {
                    AlgorithmParameters::RSA(_) => Algorithm::RS256,
                    AlgorithmParameters::EllipticCurve(ec) if ec.curve == EllipticCurve::P256 => {
                        Algorithm::ES256
                    }
                    _ => {
                        tracing::warn!(file = %path.display(), kid = ?jwk.common.key_id,
                            "skipping a JWKS key that is neither RSA nor EC P-256");
                        continue;
                    }
                };
                let key = DecodingKey::from_jwk(jwk)
                    .map_err(|e| anyhow::anyhow!("jwt.jwks `{}`: {e}", path.display()))?;
                keys.push(JwtKey {
                    kid: jwk.common.key_id.clone(),
                    alg,
                    key,
                });
            }
            anyhow::ensure!(
                !keys.is_empty(),
                "jwt.jwks `{}` holds no RSA or EC P-256 key",
                path.display()
            );
        }
        anyhow::ensure!(!keys.is_empty(), "auth = \"jwt\" but no key is configured");
        Ok(Self {
            keys,
            issuer: spec.issuer.clone(),
            audience: spec.audience.clone(),
            leeway_s: spec.leeway_s,
        })
    }

    /// Verifies `token`: signature with the configured key of the token's algorithm (and `kid`),
    /// `exp` (required), `nbf`, `iss` and `aud`. `alg = none` is never accepted.
    pub fn verify(&self, token: &str) -> Result<Claims, Denied> {
        let head = jsonwebtoken::decode_header(token).map_err(|e| {
            Denied::unauthorized("invalid_token", format!("the token is malformed: {e}"))
        })?;
        let key = self
            .keys
            .iter()
            .filter(|k| k.alg == head.alg)
            .find(|k| match (&head.kid, &k.kid) {
                (Some(want), Some(have)) => want == have,
                _ => true,
            })
            .ok_or_else(|| {
                Denied::unauthorized(
                    "invalid_token",
                    format!(
                        "no key for algorithm {:?}{}",
                        head.alg,
                        head.kid
                            .as_deref()
                            .map(|k| format!(" and kid `{k}`"))
                            .unwrap_or_default()
                    ),
                )
            })?;
        let mut v = Validation::new(key.alg);
        v.leeway = self.leeway_s;
        v.validate_nbf = true;
        v.set_required_spec_claims(&["exp"]);
        if let Some(iss) = &self.issuer {
            v.set_issuer(&[iss]);
        }
        if self.audience.is_empty() {
            v.validate_aud = false;
        } else {
            v.set_audience(&self.audience);
        }
        match jsonwebtoken::decode::<Claims>(token, &key.key, &v) {
            Ok(data) => Ok(data.claims),
            Err(e) => Err(match e.kind() {
                ErrorKind::ExpiredSignature => {
                    Denied::unauthorized("token_expired", "the token has expired")
                }
                ErrorKind::ImmatureSignature => {
                    Denied::unauthorized("invalid_token", "the token is not valid yet (nbf)")
                }
                ErrorKind::InvalidSignature => {
                    Denied::unauthorized("invalid_token", "the token's signature does not verify")
                }
                ErrorKind::InvalidAudience => {
                    Denied::forbidden("the token's audience (aud) is not accepted by this route")
                }
                ErrorKind::InvalidIssuer => {
                    Denied::forbidden("the token's issuer (iss) is not accepted by this route")
                }
                ErrorKind::MissingRequiredClaim(c) => {
                    Denied::unauthorized("invalid_token", format!("the token has no `{c}` claim"))
                }
                _ => Denied::unauthorized("invalid_token", format!("the token is invalid: {e}")),
            }),
        }
    }
}

/// A claim as sticky-key text: strings as they are, numbers and booleans printed.
pub fn claim_text<'c>(claims: &'c Claims, name: &str) -> Option<std::borrow::Cow<'c, str>> {
    match claims.get(name)? {
        serde_json::Value::String(s) => Some(std::borrow::Cow::Borrowed(s)),
        serde_json::Value::Number(n) => Some(std::borrow::Cow::Owned(n.to_string())),
        serde_json::Value::Bool(b) => Some(std::borrow::Cow::Owned(b.to_string())),
        _ => None,
    }
}
