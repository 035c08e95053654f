//! A session with one registry repository, speaking the distribution API on reqwest (tokio
//! underneath, one current-thread runtime per session).
//!
//! Written here rather than on `oci-client` because a tool that reads hostile registries needs
//! what that crate cannot give: every body (manifests, indexes, referrers lists, token answers,
//! blobs) read under a cap while it streams, never whole and checked after; one deadline for all
//! the registry work of a command; a TLS verifier that accepts a pinned self-signed certificate
//! (`tls.rs`); HTTPS that falls back to HTTP where skopeo and crane do; refresh-token (identity
//! token) exchanges; and errors that say which credentials were sent. The API surface used is
//! small: `GET /v2/`, manifests (GET, PUT), blobs (HEAD, GET, monolithic upload) and referrers.
//!
//! Redirects are followed by reqwest, which drops the `Authorization` header when a redirect
//! leaves the registry's host and port, so credentials never reach another host; a redirect
//! from HTTPS to plain HTTP is refused.

use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use base64::Engine as _;
use futures_util::StreamExt as _;
use oci_spec::distribution::Reference;
use reqwest::header::{
    HeaderMap, HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE,
};
use reqwest::{Method, StatusCode};

use super::artifact::{Descriptor, DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, OCI_INDEX, OCI_MANIFEST};
use super::auth::{self, Credentials, Lookup, Secret};
use super::hosts;
use super::tls::{self, TlsFailure, Verification};
use super::token::{self, Challenge};
use crate::digest::sha256_hex;

/// Largest manifest or index read (distribution's own limit for manifests it accepts); also the
/// cap on a referrers list.
pub const MAX_MANIFEST_BYTES: usize = 4 << 20;
/// Largest blob (an envelope) read.
pub const MAX_BLOB_BYTES: u64 = 64 << 20;
/// Largest token-endpoint answer or error body read.
const MAX_SMALL_BODY: usize = 64 << 10;
/// Longest a single connection attempt may take (within the command's deadline).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Redirects followed for one request.
const MAX_REDIRECTS: usize = 5;

const MANIFEST_TYPES: &[&str] = &[
    OCI_MANIFEST,
    OCI_INDEX,
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
];

/// How to reach and authenticate to registries; shared by `attach`, `discover`,
/// `verify --image-ref` and `run --attach`. Credentials given here are never recorded.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct RegistryArgs {
    /// Registry credentials, USER:PASSWORD (as skopeo's --creds); else the auth files and
    /// credential helpers (see docs/registry.md).
    #[arg(long, value_name = "USER:PASSWORD")]
    pub creds: Option<String>,
    /// Auth file (containers auth.json or docker config.json format, credential helpers
    /// included) to read credentials from.
    #[arg(long, value_name = "PATH")]
    pub authfile: Option<PathBuf>,
    /// `--tls-verify=false`: skip certificate verification and allow plain HTTP, as skopeo.
    /// `--tls-verify=true`: require verified TLS, also for localhost. Default: verify, and on
    /// localhost/127.0.0.0/8 fall back to HTTP when the registry does not speak TLS.
    #[arg(
        long,
        value_name = "BOOL",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
        action = clap::ArgAction::Set
    )]
    pub tls_verify: Option<bool>,
    /// Talk plain HTTP to the registry (no TLS at all).
    #[arg(long)]
    pub plain_http: bool,
    /// Directory of extra CA certificates (`*.crt`, as containers' certs.d directories).
    #[arg(long, value_name = "DIR")]
    pub cert_dir: Option<PathBuf>,
    /// A PEM file of extra CA certificates (or the registry's self-signed certificate).
    #[arg(long, value_name = "PEM")]
    pub ca_file: Option<PathBuf>,
    /// Deadline for all the registry work of this command together (every request, token,
    /// credential helper and upload), counted from the first registry contact.
    #[arg(long, value_name = "SECONDS", default_value_t = 60)]
    pub registry_timeout: u64,
    /// Where `creds` came from, when not from `--creds` (`run --attach` reuses the push
    /// command's own credentials).
    #[arg(skip)]
    pub creds_source: Option<String>,
}

impl RegistryArgs {
    /// The command's one registry deadline: `--registry-timeout` after the first call.
    pub fn deadline(&self) -> Instant {
        static DEADLINE: OnceLock<Instant> = OnceLock::new();
        *DEADLINE.get_or_init(|| Instant::now() + Duration::from_secs(self.registry_timeout.max(1)))
    }
}

/// An image reference as the user wrote it, parsed.
#[derive(Clone, Debug)]
pub struct ImageRef {
    pub text: String,
    pub reference: Reference,
}

impl ImageRef {
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let reference: Reference = text.parse().with_context(|| {
            format!("{text}: not an image reference (REGISTRY/REPO:TAG or REGISTRY/REPO@sha256:…)")
        })?;
        if let Some(digest) = reference.digest() {
            check_digest(digest).with_context(|| format!("{text}: bad digest"))?;
        }
        Ok(ImageRef {
            text: text.to_owned(),
            reference,
        })
    }

    /// The tag or digest the reference names (`latest` when it names neither).
    pub fn tag_or_digest(&self) -> String {
        self.reference
            .digest()
            .or(self.reference.tag())
            .unwrap_or("latest")
            .to_owned()
    }

    /// `registry/repository@digest`, as text.
    pub fn at_digest(&self, digest: &str) -> String {
        format!(
            "{}/{}@{digest}",
            self.reference.registry(),
            self.reference.repository()
        )
    }

    /// `registry/repository:tag`, as text.
    pub fn at_tag(&self, tag: &str) -> String {
        format!(
            "{}/{}:{tag}",
            self.reference.registry(),
            self.reference.repository()
        )
    }
}

/// `sha256:` and 64 lowercase hex digits: the only digests oci-attest reads or writes.
pub fn check_digest(digest: &str) -> anyhow::Result<()> {
    match digest.strip_prefix("sha256:") {
        Some(hex)
            if hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) =>
        {
            Ok(())
        }
        _ => bail!("{digest:?} is not a sha256 digest"),
    }
}

/// What the session will do in the repository (the token scope it asks for).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    Pull,
    Push,
}

/// One entry of a referrers list.
#[derive(Clone, Debug, serde::Deserialize)]
pub struct ReferrerEntry {
    pub digest: String,
    #[serde(default)]
    pub size: i64,
    #[serde(default, rename = "artifactType")]
    pub artifact_type: Option<String>,
}

/// One repository on one registry: transport chosen, credentials resolved, authenticated.
pub struct Session {
    runtime: tokio::runtime::Runtime,
    http: reqwest::Client,
    /// `https://host:port` or `http://host:port`.
    base: String,
    /// `host[:port]`, for messages.
    registry: String,
    repository: String,
    access: Access,
    credentials: Lookup,
    challenge: Challenge,
    /// The `Authorization` header value currently sent (`Basic …` or `Bearer …`).
    authorization: Mutex<Option<HeaderValue>>,
    deadline: tokio::time::Instant,
    timeout: u64,
}

impl Session {
    /// Finds the registry's transport (HTTPS, or HTTP where allowed), resolves credentials and
    /// authenticates for `access` on the image's repository.
    pub fn open(image: &ImageRef, args: &RegistryArgs, access: Access) -> anyhow::Result<Self> {
        let deadline = args.deadline();
        let registry = image.reference.resolve_registry().to_owned();
        let repository = image.reference.repository().to_owned();
        let creds_source = args.creds_source.as_deref().unwrap_or("--creds");
        let credentials = auth::lookup(
            &registry,
            &repository,
            args.creds.as_deref().map(|creds| (creds, creds_source)),
            args.authfile.as_deref(),
            deadline,
        )?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("cannot start the async runtime")?;
        let (http, base, challenge) =
            runtime.block_on(connect(&registry, &repository, args, deadline.into()))?;
        let session = Session {
            runtime,
            http,
            base,
            registry,
            repository,
            access,
            credentials,
            challenge,
            authorization: Mutex::new(None),
            deadline: deadline.into(),
            timeout: args.registry_timeout,
        };
        session.run(session.authenticate(None))?;
        Ok(session)
    }

    /// Runs `work` (which may drive several registry operations at once) to completion.
    pub fn run<F: std::future::Future>(&self, work: F) -> F::Output {
        self.runtime.block_on(work)
    }

    /// `work` to completion or to the command's deadline.
    async fn within<T>(
        &self,
        what: &str,
        work: impl std::future::Future<Output = anyhow::Result<T>>,
    ) -> anyhow::Result<T> {
        within(self.deadline, self.timeout, &self.registry, what, work).await
    }

    /// Sets the `Authorization` header for the current challenge: basic credentials, a registry
    /// token, or a token fetched from the bearer realm (for `asked`, the scope a 401 named, or
    /// the session's own).
    async fn authenticate(&self, asked: Option<&Challenge>) -> anyhow::Result<()> {
        let challenge = asked.unwrap_or(&self.challenge);
        let found = self.credentials.found.as_ref();
        let header = match (challenge, found.map(|c| &c.secret)) {
            (_, Some(Secret::RegistryToken(token))) => Some(format!("Bearer {token}")),
            (Challenge::None, _) => None,
            (Challenge::Basic, Some(Secret::Basic { username, password })) => Some(format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"))
            )),
            (Challenge::Basic, Some(Secret::IdentityToken(_))) => {
                bail!(
                    "registry {}: it asks for basic credentials, and {} is an identity token \
                     (only usable with a bearer-token registry)",
                    self.registry,
                    found.map(Credentials::describe).unwrap_or_default()
                )
            }
            (Challenge::Basic, None) => None,
            (
                Challenge::Bearer {
                    realm,
                    service,
                    scope,
                },
                _,
            ) => Some(format!(
                "Bearer {}",
                self.fetch_token(realm, service.as_deref(), scope.as_deref())
                    .await?
            )),
            (Challenge::Other(scheme), _) => bail!(
                "registry {}: it asks for {scheme} authentication, which oci-attest does not \
                 speak (basic and bearer tokens only)",
                self.registry
            ),
        };
        let value = header
            .map(|header| {
                let mut value = HeaderValue::from_str(&header)
                    .context("the credentials hold characters not allowed in a header")?;
                value.set_sensitive(true);
                anyhow::Ok(value)
            })
            .transpose()?;
        *self.authorization.lock().unwrap_or_else(|e| e.into_inner()) = value;
        Ok(())
    }

    /// The scope this session needs: `repository:REPO:pull` (or `pull,push`).
    fn scope(&self) -> String {
        let actions = match self.access {
            Access::Pull => "pull",
            Access::Push => "pull,push",
        };
        format!("repository:{}:{actions}", self.repository)
    }

    /// A bearer token from `realm`: an identity token is exchanged with an OAuth2
    /// `refresh_token` grant (POST; a realm that answers 404 gets the GET form), basic
    /// credentials go with a GET, and without credentials the GET is anonymous.
    async fn fetch_token(
        &self,
        realm: &str,
        service: Option<&str>,
        asked_scope: Option<&str>,
    ) -> anyhow::Result<String> {
        let what = format!("get a token from {realm}");
        let url = reqwest::Url::parse(realm).with_context(|| {
            format!("registry {}: {what}: the realm is not a URL", self.registry)
        })?;
        let plain_allowed =
            self.base.starts_with("http://") || url.host_str().is_some_and(hosts::is_loopback);
        match url.scheme() {
            "https" => {}
            "http" if plain_allowed => {}
            scheme => bail!(
                "registry {}: {what}: the token realm uses {scheme}, and credentials go only to \
                 an https realm (or to plain HTTP on this machine)",
                self.registry
            ),
        }
        let mut scopes = vec![self.scope()];
        if let Some(asked) = asked_scope.filter(|asked| !scopes.iter().any(|s| s == asked)) {
            scopes.push(asked.to_owned());
        }
        let found = self.credentials.found.as_ref();
        let mut form: Vec<(&str, String)> = Vec::new();
        if let Some(service) = service {
            form.push(("service", service.to_owned()));
        }
        let scope_text = scopes.join(" ");
        let answer = self
            .within(&what, async {
                if let Some(Secret::IdentityToken(refresh)) = found.map(|c| &c.secret) {
                    let mut oauth = form.clone();
                    oauth.push(("scope", scope_text.clone()));
                    oauth.push(("grant_type", "refresh_token".to_owned()));
                    oauth.push(("refresh_token", refresh.clone()));
                    oauth.push(("client_id", "oci-attest".to_owned()));
                    let body = url_encode(&oauth);
                    let response = self
                        .http
                        .post(url.clone())
                        .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
                        .body(body)
                        .send()
                        .await
                        .map_err(|error| self.transport_error(&error))?;
                    if response.status() != StatusCode::NOT_FOUND {
                        return Ok(response);
                    }
                }
                let mut query = url.clone();
                {
                    let mut pairs = query.query_pairs_mut();
                    for (key, value) in &form {
                        pairs.append_pair(key, value);
                    }
                    for scope in &scopes {
                        pairs.append_pair("scope", scope);
                    }
                    if let Some(Secret::Basic { username, .. }) = found.map(|c| &c.secret) {
                        pairs.append_pair("account", username);
                    }
                }
                let mut request = self.http.get(query);
                match found.map(|c| &c.secret) {
                    Some(Secret::Basic { username, password }) => {
                        request = request.basic_auth(username, Some(password));
                    }
                    Some(Secret::IdentityToken(token)) => {
                        request = request.basic_auth("<token>", Some(token));
                    }
                    _ => {}
                }
                request
                    .send()
                    .await
                    .map_err(|error| self.transport_error(&error))
            })
            .await?;
        let status = answer.status();
        let body = self
            .within(
                &what,
                read_capped(answer, MAX_SMALL_BODY as u64, "the token answer"),
            )
            .await?;
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            bail!(
                "registry {}: {what}: the token endpoint refused {} ({status})",
                self.registry,
                self.sent_text()
            );
        }
        if !status.is_success() {
            bail!(
                "registry {}: {what}: answered {status}{}",
                self.registry,
                error_detail(&body)
            );
        }
        token::read_token(&body)
            .map_err(|error| anyhow::anyhow!("registry {}: {what}: {error:#}", self.registry))
    }

    /// "the credentials of user u from --creds" or "no credentials (looked at: …)".
    fn sent_text(&self) -> String {
        match &self.credentials.found {
            Some(credentials) => credentials.describe(),
            None => format!("anonymous access ({})", self.credentials.tried_text()),
        }
    }

    /// One request to the registry, authenticated; a 401 is answered once by authenticating
    /// again for the scope it names.
    async fn send(
        &self,
        method: Method,
        url: &str,
        headers: HeaderMap,
        body: Option<Vec<u8>>,
        what: &str,
    ) -> anyhow::Result<reqwest::Response> {
        let mut retried = false;
        loop {
            let mut request = self
                .http
                .request(method.clone(), url)
                .headers(headers.clone());
            if let Some(value) = self
                .authorization
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone()
            {
                request = request.header(AUTHORIZATION, value);
            }
            if let Some(body) = &body {
                request = request.body(body.clone());
            }
            let response = self
                .within(what, async {
                    request
                        .send()
                        .await
                        .map_err(|error| self.transport_error(&error))
                })
                .await?;
            if response.status() != StatusCode::UNAUTHORIZED {
                return Ok(response);
            }
            let challenge = Challenge::parse(
                response
                    .headers()
                    .get_all(WWW_AUTHENTICATE)
                    .iter()
                    .filter_map(|value| value.to_str().ok()),
            );
            let refreshable = matches!(challenge, Challenge::Bearer { .. })
                && !matches!(
                    self.credentials.found.as_ref().map(|c| &c.secret),
                    Some(Secret::RegistryToken(_))
                );
            if retried || !refreshable {
                return Err(self.unauthorized(what));
            }
            retried = true;
            self.authenticate(Some(&challenge)).await?;
        }
    }

    /// The message for a 401 that authenticating did not cure: what was sent, or what was
    /// looked at when nothing was.
    fn unauthorized(&self, what: &str) -> anyhow::Error {
        let problem = match &self.credentials.found {
            Some(credentials) => format!(
                "the registry refused {} (401 Unauthorized): check them, or that they may {}",
                credentials.describe(),
                match self.access {
                    Access::Pull => "read this repository",
                    Access::Push => "push to this repository",
                }
            ),
            None => format!(
                "the registry wants credentials (401 Unauthorized) and none were found ({}); \
                 pass --creds or --authfile, or log in with docker/podman/skopeo login",
                self.credentials.tried_text()
            ),
        };
        anyhow::anyhow!("registry {}: {what}: {problem}", self.registry)
    }

    fn transport_error(&self, error: &reqwest::Error) -> anyhow::Error {
        anyhow::anyhow!(describe_transport(error, self.base.starts_with("https")))
    }

    fn url(&self, tail: &str) -> String {
        format!("{}/v2/{}/{tail}", self.base, self.repository)
    }

    /// An error for an answer that is not `expected`: status and the registry's error codes.
    async fn unexpected(&self, response: reqwest::Response, what: &str) -> anyhow::Error {
        let status = response.status();
        if status == StatusCode::FORBIDDEN {
            return anyhow::anyhow!(
                "registry {}: {what}: forbidden (403): {} may not {} this repository",
                self.registry,
                self.sent_text(),
                match self.access {
                    Access::Pull => "read",
                    Access::Push => "push to",
                }
            );
        }
        let body = self
            .within(
                what,
                read_capped(response, MAX_SMALL_BODY as u64, "the error body"),
            )
            .await
            .unwrap_or_default();
        anyhow::anyhow!(
            "registry {}: {what}: answered {status}{}",
            self.registry,
            error_detail(&body)
        )
    }

    /// The manifest at `reference` (tag or digest): its bytes and descriptor, the digest computed
    /// over the bytes and checked against the reference's digest and the registry's header.
    pub fn manifest(&self, reference: &str) -> anyhow::Result<(Vec<u8>, Descriptor)> {
        self.manifest_if_exists(reference)?.with_context(|| {
            format!(
                "registry {}: {}:{reference}: no such manifest",
                self.registry, self.repository
            )
        })
    }

    /// [`Session::manifest`], or `None` when the registry does not have it.
    pub fn manifest_if_exists(
        &self,
        reference: &str,
    ) -> anyhow::Result<Option<(Vec<u8>, Descriptor)>> {
        self.run(self.fetch_manifest(reference))
    }

    /// [`Session::manifest_if_exists`], for use inside [`Session::run`].
    pub async fn fetch_manifest(
        &self,
        reference: &str,
    ) -> anyhow::Result<Option<(Vec<u8>, Descriptor)>> {
        let what = format!("read manifest {}", self.display_ref(reference));
        let mut headers = HeaderMap::new();
        headers.insert(
            ACCEPT,
            HeaderValue::from_str(&MANIFEST_TYPES.join(", "))
                .context("the Accept header of a manifest request")?,
        );
        let response = self
            .send(
                Method::GET,
                &self.url(&format!("manifests/{reference}")),
                headers,
                None,
                &what,
            )
            .await?;
        if response.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !response.status().is_success() {
            return Err(self.unexpected(response, &what).await);
        }
        let header_digest = response
            .headers()
            .get("docker-content-digest")
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned);
        let bytes = self
            .within(
                &what,
                read_capped(response, MAX_MANIFEST_BYTES as u64, "the manifest"),
            )
            .await?;
        let computed = format!("sha256:{}", sha256_hex(&bytes));
        for (claimed, by) in [
            (
                reference.starts_with("sha256:").then_some(reference),
                "it was asked for by",
            ),
            (
                header_digest
                    .as_deref()
                    .filter(|digest| digest.starts_with("sha256:")),
                "the registry's Docker-Content-Digest says",
            ),
        ] {
            if let Some(claimed) = claimed {
                if claimed != computed {
                    bail!(
                        "registry {}: {what}: the manifest's digest is {computed}, but {by} {claimed}",
                        self.registry
                    );
                }
            }
        }
        let media_type = super::artifact::manifest_media_type(&bytes)
            .with_context(|| format!("registry {}: {what}", self.registry))?;
        let descriptor = Descriptor {
            media_type,
            digest: computed,
            size: bytes.len() as u64,
        };
        Ok(Some((bytes, descriptor)))
    }

    fn display_ref(&self, reference: &str) -> String {
        let separator = if reference.starts_with("sha256:") {
            '@'
        } else {
            ':'
        };
        format!(
            "{}/{}{separator}{reference}",
            self.registry, self.repository
        )
    }

    /// Uploads a blob unless the registry already has it (one POST, then one PUT with the
    /// whole blob: envelopes are small).
    pub fn push_blob(&self, bytes: &[u8]) -> anyhow::Result<()> {
        self.run(async {
            let digest = format!("sha256:{}", sha256_hex(bytes));
            let what = format!("upload blob {digest}");
            let head = self
                .send(
                    Method::HEAD,
                    &self.url(&format!("blobs/{digest}")),
                    HeaderMap::new(),
                    None,
                    &what,
                )
                .await?;
            if head.status().is_success() {
                return Ok(());
            }
            let started = self
                .send(
                    Method::POST,
                    &self.url("blobs/uploads/"),
                    HeaderMap::new(),
                    Some(Vec::new()),
                    &what,
                )
                .await?;
            if started.status() != StatusCode::ACCEPTED {
                return Err(self.unexpected(started, &what).await);
            }
            let location = started
                .headers()
                .get("location")
                .and_then(|value| value.to_str().ok())
                .with_context(|| {
                    format!(
                        "registry {}: {what}: no upload Location given",
                        self.registry
                    )
                })?;
            let mut url = reqwest::Url::parse(&self.base)
                .and_then(|base| base.join(location))
                .with_context(|| {
                    format!(
                        "registry {}: {what}: bad upload Location {location:?}",
                        self.registry
                    )
                })?;
            url.query_pairs_mut().append_pair("digest", &digest);
            let mut headers = HeaderMap::new();
            headers.insert(
                CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            );
            let done = self
                .send(
                    Method::PUT,
                    url.as_str(),
                    headers,
                    Some(bytes.to_vec()),
                    &what,
                )
                .await?;
            if !done.status().is_success() {
                return Err(self.unexpected(done, &what).await);
            }
            Ok(())
        })
    }

    /// Stores a manifest under `reference` (a tag, or its own digest).
    pub fn push_manifest(
        &self,
        reference: &str,
        bytes: &[u8],
        media_type: &str,
    ) -> anyhow::Result<()> {
        self.run(async {
            let what = format!("store manifest {}", self.display_ref(reference));
            let mut headers = HeaderMap::new();
            headers.insert(
                CONTENT_TYPE,
                HeaderValue::from_str(media_type)
                    .with_context(|| format!("{media_type:?} is not a valid media type"))?,
            );
            let response = self
                .send(
                    Method::PUT,
                    &self.url(&format!("manifests/{reference}")),
                    headers,
                    Some(bytes.to_vec()),
                    &what,
                )
                .await?;
            if !response.status().is_success() {
                return Err(self.unexpected(response, &what).await);
            }
            Ok(())
        })
    }

    /// The referrers of the manifest `digest` with `artifact_type`: the referrers API where the
    /// registry has it, else the referrers tag-schema index (`sha256-<hex>`). The list is read
    /// under the manifest cap; entries are filtered here too (a registry may ignore the filter).
    pub fn referrers(
        &self,
        digest: &str,
        artifact_type: &str,
    ) -> anyhow::Result<Vec<ReferrerEntry>> {
        self.run(async {
            let what = format!("list the referrers of {}", self.display_ref(digest));
            let url = format!(
                "{}?artifactType={}",
                self.url(&format!("referrers/{digest}")),
                url_encode_component(artifact_type)
            );
            let mut headers = HeaderMap::new();
            headers.insert(ACCEPT, HeaderValue::from_static(OCI_INDEX));
            let response = self.send(Method::GET, &url, headers, None, &what).await?;
            let bytes = match response.status() {
                StatusCode::NOT_FOUND => {
                    match self
                        .fetch_manifest(&super::artifact::referrers_tag(digest))
                        .await?
                    {
                        Some((bytes, _)) => bytes,
                        None => return Ok(Vec::new()),
                    }
                }
                status if status.is_success() => {
                    self.within(
                        &what,
                        read_capped(response, MAX_MANIFEST_BYTES as u64, "the referrers list"),
                    )
                    .await?
                }
                _ => return Err(self.unexpected(response, &what).await),
            };
            #[derive(serde::Deserialize)]
            struct Index {
                #[serde(default)]
                manifests: Vec<ReferrerEntry>,
            }
            let index: Index = serde_json::from_slice(&bytes).with_context(|| {
                format!("registry {}: {what}: not an image index", self.registry)
            })?;
            Ok(index
                .manifests
                .into_iter()
                .filter(|entry| entry.artifact_type.as_deref() == Some(artifact_type))
                .collect())
        })
    }

    /// The blob `digest` (at most `max` bytes, as its descriptor promised, and never more than
    /// [`MAX_BLOB_BYTES`]), checked against its digest.
    pub async fn fetch_blob(&self, digest: &str, max: u64) -> anyhow::Result<Vec<u8>> {
        check_digest(digest)?;
        let cap = max.min(MAX_BLOB_BYTES);
        let what = format!("read blob {digest}");
        let response = self
            .send(
                Method::GET,
                &self.url(&format!("blobs/{digest}")),
                HeaderMap::new(),
                None,
                &what,
            )
            .await?;
        if !response.status().is_success() {
            return Err(self.unexpected(response, &what).await);
        }
        let bytes = self
            .within(&what, read_capped(response, cap, "the blob"))
            .await?;
        let computed = format!("sha256:{}", sha256_hex(&bytes));
        if computed != digest {
            bail!(
                "registry {}: {what}: the content's digest is {computed}",
                self.registry
            );
        }
        Ok(bytes)
    }
}

/// `work` to completion or to `deadline`; its errors get the registry and the operation.
async fn within<T>(
    deadline: tokio::time::Instant,
    timeout: u64,
    registry: &str,
    what: &str,
    work: impl std::future::Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<T> {
    match tokio::time::timeout_at(deadline, work).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => Err(anyhow::anyhow!("registry {registry}: {what}: {error:#}")),
        Err(_) => bail!(
            "registry {registry}: {what}: not done within {timeout}s (--registry-timeout bounds \
             all the registry work of this command)"
        ),
    }
}

/// The body of `response`, refused as soon as more than `cap` bytes arrive (or are announced).
async fn read_capped(response: reqwest::Response, cap: u64, what: &str) -> anyhow::Result<Vec<u8>> {
    if let Some(length) = response.content_length() {
        if length > cap {
            bail!("{what} announces {length} bytes, more than the {cap}-byte limit");
        }
    }
    let mut bytes = Vec::new();
    let mut stream = response.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk
            .map_err(|error| anyhow::anyhow!("{what}: {}", describe_transport(&error, false)))?;
        if (bytes.len() + chunk.len()) as u64 > cap {
            bail!("{what} is longer than the {cap}-byte limit (stopped reading there)");
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(bytes)
}

/// The first registry error (`{"errors":[{"code","message"}]}`) or text line of a body.
fn error_detail(body: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct Errors {
        errors: Vec<ErrorEntry>,
    }
    #[derive(serde::Deserialize)]
    struct ErrorEntry {
        #[serde(default)]
        code: String,
        #[serde(default)]
        message: String,
    }
    if let Ok(errors) = serde_json::from_slice::<Errors>(body) {
        if let Some(first) = errors.errors.first() {
            return format!(": {} {}", first.code, first.message);
        }
    }
    let text = String::from_utf8_lossy(body);
    let line: String = text
        .lines()
        .next()
        .unwrap_or_default()
        .chars()
        .filter(|c| !c.is_control())
        .take(200)
        .collect();
    if line.trim().is_empty() {
        String::new()
    } else {
        format!(": {}", line.trim())
    }
}

/// One line for a failed request: what TLS said (plain HTTP, certificate), else the chain.
fn describe_transport(error: &reqwest::Error, https: bool) -> String {
    match tls::classify(error) {
        Some(TlsFailure::NotTls) => {
            return "the registry speaks plain HTTP: pass --plain-http (TLS handshake answered \
                    with something that is not TLS)"
                .to_owned()
        }
        Some(TlsFailure::Certificate) => {
            return format!(
                "the registry's TLS certificate is not trusted ({}): pass its CA with --ca-file \
                 or --cert-dir (or put it in /etc/containers/certs.d/HOST:PORT/), or \
                 --tls-verify=false",
                chain(error).rsplit(": ").next().unwrap_or_default()
            )
        }
        None => {}
    }
    let mut text = chain(error);
    if error.is_connect() && !https {
        text = format!("cannot connect: {text}");
    }
    text
}

fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text = format!("{text}: {cause_text}");
        }
        source = cause.source();
    }
    text
}

fn url_encode_component(text: &str) -> String {
    form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

fn url_encode(pairs: &[(&str, String)]) -> String {
    form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish()
}

/// The transports to try, in order, with why HTTP is allowed when it is.
fn transports(
    registry: &str,
    repository: &str,
    args: &RegistryArgs,
) -> anyhow::Result<(Vec<Option<Verification>>, bool)> {
    if args.plain_http {
        return Ok((vec![None], false));
    }
    let extra =
        tls::extra_certificate_files(registry, args.ca_file.as_deref(), args.cert_dir.as_deref())?;
    let insecure_conf = hosts::insecure_in_registries_conf(&format!("{registry}/{repository}"))?;
    if let Some(path) = &insecure_conf {
        tracing::info!(
            "registry {registry} is insecure in {}: unverified TLS, HTTP allowed",
            path.display()
        );
    }
    if args.tls_verify == Some(false) || insecure_conf.is_some() {
        return Ok((vec![Some(Verification::Skip), None], true));
    }
    let verified = Some(Verification::Verify { extra });
    if args.tls_verify.is_none() && hosts::is_loopback(registry) {
        return Ok((vec![verified, None], false));
    }
    Ok((vec![verified], false))
}

/// Pings `GET /v2/` over the first transport that answers: the client, its base URL and the
/// authentication challenge.
async fn connect(
    registry: &str,
    repository: &str,
    args: &RegistryArgs,
    deadline: tokio::time::Instant,
) -> anyhow::Result<(reqwest::Client, String, Challenge)> {
    let (transports, insecure) = transports(registry, repository, args)?;
    let mut failures: Vec<String> = Vec::new();
    let count = transports.len();
    for (index, transport) in transports.into_iter().enumerate() {
        let https = transport.is_some();
        let http = build_client(transport.as_ref(), deadline)?;
        let base = format!("{}://{registry}", if https { "https" } else { "http" });
        let what = format!("GET {base}/v2/");
        let pinged = within(deadline, args.registry_timeout, registry, &what, async {
            let response = http
                .get(format!("{base}/v2/"))
                .send()
                .await
                .map_err(|error| (describe_transport(&error, https), tls::classify(&error)));
            let response = match response {
                Ok(response) => response,
                Err((text, kind)) => return Ok(Err((text, kind))),
            };
            let status = response.status();
            let challenge = Challenge::parse(
                response
                    .headers()
                    .get_all(WWW_AUTHENTICATE)
                    .iter()
                    .filter_map(|value| value.to_str().ok()),
            );
            let body = read_capped(response, MAX_SMALL_BODY as u64, "the answer")
                .await
                .unwrap_or_default();
            Ok(Ok((status, challenge, body)))
        })
        .await?;
        match pinged {
            Ok((status, _, _)) if status.is_success() => {
                return Ok((http, base, Challenge::None));
            }
            Ok((StatusCode::UNAUTHORIZED, challenge, _)) => return Ok((http, base, challenge)),
            Ok((status, _, body)) => {
                let hint = if !https && status == StatusCode::BAD_REQUEST {
                    " (the registry may speak TLS: drop --plain-http)"
                } else {
                    " (is this a registry?)"
                };
                bail!(
                    "registry {registry}: {what}: answered {status}{}{hint}",
                    error_detail(&body)
                );
            }
            Err((text, kind)) => {
                let scheme = if https { "https" } else { "http" };
                failures.push(format!("{scheme}: {text}"));
                let more = index + 1 < count;
                // A certificate problem means TLS is there: HTTP would only hide it.
                if more && (insecure || kind != Some(TlsFailure::Certificate)) {
                    tracing::debug!("registry {registry}: {what} failed ({text}); trying HTTP");
                    continue;
                }
                break;
            }
        }
    }
    let text = if failures.len() == 1 {
        failures[0]
            .split_once(": ")
            .map_or(failures[0].clone(), |(_, text)| text.to_owned())
    } else {
        failures.join("; ")
    };
    bail!("registry {registry}: cannot reach it: {text}")
}

fn build_client(
    verification: Option<&Verification>,
    deadline: tokio::time::Instant,
) -> anyhow::Result<reqwest::Client> {
    let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
    let mut builder = reqwest::Client::builder()
        .user_agent(concat!("oci-attest/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(CONNECT_TIMEOUT.min(remaining.max(Duration::from_millis(1))))
        .redirect(reqwest::redirect::Policy::custom(|attempt| {
            let downgrade = attempt.url().scheme() == "http"
                && attempt
                    .previous()
                    .last()
                    .is_some_and(|previous| previous.scheme() == "https");
            if downgrade {
                attempt.error("a redirect from HTTPS to plain HTTP was refused")
            } else if attempt.previous().len() > MAX_REDIRECTS {
                attempt.error("too many redirects")
            } else {
                attempt.follow()
            }
        }));
    if let Some(verification) = verification {
        builder = builder.tls_backend_preconfigured(tls::client_config(verification)?);
    }
    builder.build().context("cannot set up the HTTP client")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_and_digests_are_checked() {
        let image = ImageRef::parse("127.0.0.1:5000/team/app:1").unwrap();
        assert_eq!(image.reference.resolve_registry(), "127.0.0.1:5000");
        assert_eq!(image.reference.repository(), "team/app");
        assert_eq!(image.tag_or_digest(), "1");
        let digest = format!("sha256:{}", "a".repeat(64));
        assert_eq!(
            image.at_digest(&digest),
            format!("127.0.0.1:5000/team/app@{digest}")
        );
        assert!(ImageRef::parse("127.0.0.1:5000/app@sha256:abc").is_err());
        assert!(ImageRef::parse("127.0.0.1:5000/app:bad tag").is_err());
        assert!(check_digest(&format!("sha256:{}", "A".repeat(64))).is_err());
        assert!(check_digest(&format!("sha512:{}", "a".repeat(64))).is_err());
    }

    #[test]
    fn transports_follow_the_flags_and_the_host() {
        let kinds = |registry: &str, args: &RegistryArgs| {
            transports(registry, "app", args)
                .unwrap()
                .0
                .iter()
                .map(|transport| match transport {
                    None => "http",
                    Some(Verification::Skip) => "https-unverified",
                    Some(Verification::Verify { .. }) => "https",
                })
                .collect::<Vec<_>>()
        };
        let default = RegistryArgs::default();
        assert_eq!(kinds("reg.example:5000", &default), ["https"]);
        assert_eq!(kinds("127.0.0.1:5000", &default), ["https", "http"]);
        assert_eq!(kinds("localhost:5000", &default), ["https", "http"]);
        let strict = RegistryArgs {
            tls_verify: Some(true),
            ..RegistryArgs::default()
        };
        assert_eq!(kinds("127.0.0.1:5000", &strict), ["https"]);
        let insecure = RegistryArgs {
            tls_verify: Some(false),
            ..RegistryArgs::default()
        };
        assert_eq!(
            kinds("reg.example:5000", &insecure),
            ["https-unverified", "http"]
        );
        let plain = RegistryArgs {
            plain_http: true,
            ..RegistryArgs::default()
        };
        assert_eq!(kinds("reg.example:5000", &plain), ["http"]);
    }

    #[test]
    fn error_bodies_are_summarised_on_one_line() {
        assert_eq!(
            error_detail(br#"{"errors":[{"code":"DENIED","message":"no"}]}"#),
            ": DENIED no"
        );
        assert_eq!(
            error_detail(b"404 page not found\nmore"),
            ": 404 page not found"
        );
        assert_eq!(error_detail(b""), "");
        assert_eq!(url_encode_component("a+b/c d"), "a%2Bb%2Fc+d");
    }
}
