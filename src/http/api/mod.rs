//! The JSON API under `/api/`: accounts, users and videos, scoped to the caller's
//! organization on every path. A resource of another organization answers exactly as a
//! missing one.
//!
//! Nothing changes state cross-site: a POST, PATCH, PUT or DELETE from a page of another
//! origin is refused (403 `cross_site`) whatever it carries, and JSON bodies must say
//! `Content-Type: application/json` (415), which a plain HTML form cannot.
//!
//! Door: [`Api::new`], then [`Api::handle`] for every request under `/api/`.

mod auth;
mod device;
mod media;
mod read_ahead;
mod setup;
mod upload;
mod users;
mod videos;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use serde::de::DeserializeOwned;

use super::error::ApiError;
use super::{Body, full};
use crate::auth::limiter::LoginLimiter;
use crate::auth::setup::SetupCode;
use crate::auth::{Claims, Role, TokenKeys};
use crate::device::Device;
use crate::events::VideoNews;
use crate::jobs::Jobs;
use crate::metrics::Metrics;
use crate::store::{Store, User};

/// Largest JSON request body.
const MAX_JSON_BODY: usize = 64 * 1024;

#[derive(Debug, Clone)]
pub struct ApiConfig {
    pub access_ttl: Duration,
    pub refresh_ttl: Duration,
    /// Lifetime of the signed URLs a `<video>` or `<img>` element uses.
    pub media_url_ttl: Duration,
    pub max_upload_bytes: u64,
    /// Uploads are refused (507) rather than let free space drop below this.
    pub min_free_bytes: u64,
    /// Mark the refresh cookie `Secure` (when the box is reached over HTTPS).
    pub secure_cookies: bool,
    pub login_attempts_per_minute: u32,
    pub login_attempts_per_address_per_minute: u32,
    /// How long a rotated refresh token still gets the same successor (two tabs, a retry).
    pub refresh_grace: Duration,
    /// Origins besides the box's own that may change state (the `cors_origins` setting).
    pub allowed_origins: Vec<String>,
}

/// The parts of the service the API works with.
pub struct ApiParts {
    pub store: Store,
    pub keys: Arc<TokenKeys>,
    pub news: VideoNews,
    pub jobs: Arc<Jobs>,
    pub device: Arc<Device>,
    pub metrics: Arc<Metrics>,
    pub setup_code: SetupCode,
}

pub struct Api {
    store: Store,
    keys: Arc<TokenKeys>,
    news: VideoNews,
    jobs: Arc<Jobs>,
    device: Arc<Device>,
    metrics: Arc<Metrics>,
    setup_code: SetupCode,
    setup_lock: tokio::sync::Mutex<()>,
    limiter: LoginLimiter,
    config: ApiConfig,
    routes: matchit::Router<Route>,
}

#[derive(Debug, Clone, Copy)]
enum Route {
    Setup,
    Login,
    Refresh,
    Logout,
    Me,
    Users,
    User,
    Videos,
    Video,
    Stream,
    Original,
    Thumbnail,
    Previews,
    Device,
    Identify,
}

/// Who is calling, as the store knows them now (role changes apply at once).
pub(crate) struct Caller {
    pub user: User,
}

impl Caller {
    fn require(&self, allowed: &[Role]) -> Result<(), ApiError> {
        if allowed.contains(&self.user.role) { Ok(()) } else { Err(ApiError::forbidden()) }
    }
}

const EDITORS: &[Role] = &[Role::Admin, Role::Editor];
const ADMINS: &[Role] = &[Role::Admin];

impl Api {
    pub fn new(parts: ApiParts, config: ApiConfig) -> Api {
        let ApiParts { store, keys, news, jobs, device, metrics, setup_code } = parts;
        let mut routes = matchit::Router::new();
        for (path, route) in [
            ("/api/setup", Route::Setup),
            ("/api/auth/login", Route::Login),
            ("/api/auth/refresh", Route::Refresh),
            ("/api/auth/logout", Route::Logout),
            ("/api/me", Route::Me),
            ("/api/users", Route::Users),
            ("/api/users/{id}", Route::User),
            ("/api/videos", Route::Videos),
            ("/api/videos/{id}", Route::Video),
            ("/api/videos/{id}/stream", Route::Stream),
            ("/api/videos/{id}/original", Route::Original),
            ("/api/videos/{id}/thumbnail", Route::Thumbnail),
            ("/api/videos/{id}/previews.vtt", Route::Previews),
            ("/api/device", Route::Device),
            ("/api/device/identify", Route::Identify),
        ] {
            if let Err(error) = routes.insert(path, route) {
                tracing::error!(%error, path, "bad route");
            }
        }
        let limiter = LoginLimiter::new(config.login_attempts_per_minute, config.login_attempts_per_address_per_minute);
        Api {
            store,
            keys,
            news,
            jobs,
            device,
            metrics,
            setup_code,
            setup_lock: tokio::sync::Mutex::new(()),
            limiter,
            config,
            routes,
        }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub async fn handle(&self, request: Request<Incoming>, remote: SocketAddr) -> Response<Body> {
        let path = request.uri().path().to_owned();
        let changes_state = !matches!(*request.method(), Method::GET | Method::HEAD | Method::OPTIONS);
        let result = match self.routes.at(&path) {
            Ok(_)
                if changes_state && !crate::engineio::same_origin(&self.config.allowed_origins, request.headers()) =>
            {
                tracing::warn!(%remote, path, origin = ?request.headers().get(header::ORIGIN), "a cross-site request was refused");
                Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    "cross_site",
                    "requests from another site may not change anything",
                ))
            }
            Ok(matched) => {
                let route = *matched.value;
                let id = matched.params.get("id").map(str::to_owned);
                let method = request.method().clone();
                self.dispatch(route, &method, id, request, remote).await
            }
            Err(_) => Err(ApiError::not_found("route")),
        };
        let mut response = result.unwrap_or_else(ApiError::into_response);
        // API answers are per user: never cached by a shared cache.
        response.headers_mut().entry(header::CACHE_CONTROL).or_insert(HeaderValue::from_static("no-store"));
        response.headers_mut().insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
        response
    }

    async fn dispatch(
        &self,
        route: Route,
        method: &Method,
        id: Option<String>,
        request: Request<Incoming>,
        remote: SocketAddr,
    ) -> Result<Response<Body>, ApiError> {
        let id = id.unwrap_or_default();
        match (route, method) {
            (Route::Setup, &Method::GET) => self.setup_status(),
            (Route::Setup, &Method::POST) => self.setup(request, remote).await,
            (Route::Login, &Method::POST) => self.login(request, remote).await,
            (Route::Refresh, &Method::POST) => self.refresh(request).await,
            (Route::Logout, &Method::POST) => self.logout(request).await,
            (Route::Stream, &Method::GET | &Method::HEAD) => self.stream(&id, request).await,
            (Route::Original, &Method::GET | &Method::HEAD) => self.original(&id, request).await,
            (Route::Thumbnail, &Method::GET | &Method::HEAD) => self.thumbnail(&id, request).await,
            (Route::Previews, &Method::GET | &Method::HEAD) => self.previews(&id, request).await,
            (Route::Setup | Route::Login | Route::Refresh | Route::Logout, _)
            | (Route::Stream | Route::Original | Route::Thumbnail | Route::Previews, _) => Err(method_not_allowed()),
            (route, method) => {
                let caller = self.caller(&request)?;
                match (route, method) {
                    (Route::Me, &Method::GET) => self.me(&caller),
                    (Route::Users, &Method::GET) => self.list_users(&caller),
                    (Route::Users, &Method::POST) => self.create_user(&caller, request).await,
                    (Route::User, &Method::PATCH) => self.update_user(&caller, &id, request).await,
                    (Route::User, &Method::DELETE) => self.delete_user(&caller, &id).await,
                    (Route::Videos, &Method::GET) => self.list_videos(&caller, &request),
                    (Route::Videos, &Method::POST) => self.upload(&caller, request).await,
                    (Route::Video, &Method::GET) => self.get_video(&caller, &id),
                    (Route::Video, &Method::PATCH) => self.update_video(&caller, &id, request).await,
                    (Route::Video, &Method::DELETE) => self.delete_video(&caller, &id).await,
                    (Route::Device, &Method::GET) => self.device_status(&caller),
                    (Route::Identify, &Method::POST) => self.identify(&caller),
                    _ => Err(method_not_allowed()),
                }
            }
        }
    }

    /// The caller behind `Authorization: Bearer <access token>`.
    fn caller(&self, request: &Request<Incoming>) -> Result<Caller, ApiError> {
        let claims = self.bearer_claims(request)?;
        self.caller_from(&claims)
    }

    fn bearer_claims(&self, request: &Request<Incoming>) -> Result<Claims, ApiError> {
        let header = request
            .headers()
            .get(header::AUTHORIZATION)
            .ok_or_else(|| ApiError::unauthorized("authentication required"))?;
        let token = crate::auth::bearer_token(header.as_bytes())
            .ok_or_else(|| ApiError::unauthorized("expected a Bearer token"))?;
        self.keys.verify(token).map_err(|error| ApiError::unauthorized(error.to_string()))
    }

    fn caller_from(&self, claims: &Claims) -> Result<Caller, ApiError> {
        // The token is only as good as the account behind it: deleted users are out at once.
        let user = self
            .store
            .user(&claims.sub)?
            .filter(|user| user.org_id == claims.org)
            .ok_or_else(|| ApiError::unauthorized("unknown account"))?;
        Ok(Caller { user })
    }
}

fn method_not_allowed() -> ApiError {
    ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "method not allowed on this path")
}

/// Reads a JSON body of at most 64 KiB, declared as such (`application/json`, parameters
/// allowed): a cross-site form can only send `text/plain`, urlencoded or multipart.
async fn read_json<T: DeserializeOwned>(request: Request<Incoming>) -> Result<T, ApiError> {
    let declared = request.headers().get(header::CONTENT_TYPE).and_then(|value| value.to_str().ok());
    let essence = declared.map(|value| value.split(';').next().unwrap_or("").trim());
    if !essence.is_some_and(|essence| essence.eq_ignore_ascii_case("application/json")) {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "the body must be JSON, sent as Content-Type: application/json",
        ));
    }
    let body = match Limited::new(request.into_body(), MAX_JSON_BODY).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(error) if error.is::<http_body_util::LengthLimitError>() => {
            return Err(ApiError::too_large("the JSON body is over 64 KiB"));
        }
        Err(error) => return Err(ApiError::bad_request(format!("reading the body: {error}"))),
    };
    serde_json::from_slice(&body).map_err(|error| ApiError::bad_request(format!("invalid JSON: {error}")))
}

fn json_response(status: StatusCode, value: &impl serde::Serialize) -> Result<Response<Body>, ApiError> {
    let body = serde_json::to_vec(value).map_err(|error| ApiError::internal("encoding a response", error))?;
    let mut response = Response::new(full(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Ok(response)
}

fn no_content() -> Response<Body> {
    let mut response = Response::new(full(Bytes::new()));
    *response.status_mut() = StatusCode::NO_CONTENT;
    response
}

/// The query string's parameters.
fn query_params(request: &Request<Incoming>) -> Vec<(String, String)> {
    form_urlencoded::parse(request.uri().query().unwrap_or("").as_bytes()).into_owned().collect()
}
