//! Login, refresh and logout. The access token travels in responses and `Authorization`
//! headers; the refresh token only in an HttpOnly, SameSite=Strict cookie scoped to
//! `/api/auth`, so page scripts never see it. None of them answers another site (see the
//! module above), so no page elsewhere can log a visitor in, out, or into another account.

use std::net::SocketAddr;

use cookie::{Cookie, SameSite};
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Request, Response, StatusCode};
use serde::Deserialize;
use serde_json::json;

use super::{Api, Caller, json_response, no_content, read_json};
use crate::auth::password;
use crate::http::Body;
use crate::http::error::ApiError;
use crate::store::{RefreshRefusal, User};

const REFRESH_COOKIE: &str = "tally_refresh";
const REFRESH_PATH: &str = "/api/auth";
/// Longest email address (RFC 5321's path limit).
pub(super) const MAX_EMAIL_BYTES: usize = 254;

#[derive(Deserialize)]
struct Login {
    email: String,
    password: String,
}

impl Api {
    pub(super) async fn login(
        &self,
        request: Request<Incoming>,
        remote: SocketAddr,
    ) -> Result<Response<Body>, ApiError> {
        let login: Login = read_json(request).await?;
        // No account has a longer address; nor may a limiter key be any longer.
        if login.email.len() > MAX_EMAIL_BYTES {
            return Err(ApiError::new(StatusCode::UNAUTHORIZED, "invalid_credentials", "wrong email or password"));
        }
        if let Err(wait) = self.limiter.login(&login.email, remote.ip()) {
            tracing::warn!(address = %remote.ip(), "login attempts over the limit");
            return Err(too_many_attempts(wait));
        }
        let user = self.store.user_by_email(&login.email)?;
        let stored = user.as_ref().map(|u| u.password_hash.clone());
        let valid = tokio::task::spawn_blocking(move || password::verify(&login.password, stored.as_deref()))
            .await
            .map_err(|error| ApiError::internal("verifying a password", error))?;
        let Some(user) = user.filter(|_| valid) else {
            return Err(ApiError::new(StatusCode::UNAUTHORIZED, "invalid_credentials", "wrong email or password"));
        };
        tracing::info!(user = user.id, org = user.org_id, "logged in");
        let refresh = self.store.issue_refresh(&user.id, &user.org_id, self.config.refresh_ttl.as_millis() as u64)?;
        self.store.durable().await?;
        self.session_response(&user, &refresh)
    }

    pub(super) async fn refresh(&self, request: Request<Incoming>) -> Result<Response<Body>, ApiError> {
        let Some(token) = refresh_cookie(&request) else {
            return Err(ApiError::unauthorized("no refresh token"));
        };
        let outcome = self.store.rotate_refresh(
            &token,
            |token| self.keys.refresh_successor(token),
            self.config.refresh_ttl.as_millis() as u64,
            self.config.refresh_grace.as_millis() as u64,
        )?;
        self.store.durable().await?;
        let (record, next) = match outcome {
            Ok(rotated) => rotated,
            Err(refusal) => {
                if refusal == RefreshRefusal::Reused {
                    tracing::warn!("a rotated refresh token was reused; its family is revoked");
                }
                let mut response = ApiError::unauthorized("the session has ended; log in again").into_response();
                response.headers_mut().insert(header::SET_COOKIE, self.refresh_cookie_header("", true));
                return Ok(response);
            }
        };
        let user = self
            .store
            .user(&record.user_id)?
            .filter(|u| u.org_id == record.org_id)
            .ok_or_else(|| ApiError::unauthorized("unknown account"))?;
        self.session_response(&user, &next)
    }

    /// Ends the session of the refresh cookie sent; without one there is nothing to end, and
    /// nothing (no cookie) is touched.
    pub(super) async fn logout(&self, request: Request<Incoming>) -> Result<Response<Body>, ApiError> {
        let mut response = no_content();
        if let Some(token) = refresh_cookie(&request) {
            self.store.revoke_refresh(&token)?;
            self.store.durable().await?;
            response.headers_mut().insert(header::SET_COOKIE, self.refresh_cookie_header("", true));
        }
        Ok(response)
    }

    pub(super) fn me(&self, caller: &Caller) -> Result<Response<Body>, ApiError> {
        json_response(StatusCode::OK, &self.user_json(&caller.user)?)
    }

    pub(super) fn user_json(&self, user: &User) -> Result<serde_json::Value, ApiError> {
        let org = self.store.org(&user.org_id)?;
        Ok(json!({
            "id": user.id,
            "email": user.email,
            "role": user.role,
            "orgId": user.org_id,
            "orgName": org.map(|o| o.name),
            "createdAt": user.created_at,
        }))
    }

    pub(super) fn session_response(&self, user: &User, refresh: &str) -> Result<Response<Body>, ApiError> {
        let access = self
            .keys
            .issue(&user.id, &user.org_id, user.role, self.config.access_ttl)
            .map_err(|error| ApiError::internal("signing a token", error))?;
        let body = json!({
            "accessToken": access,
            "expiresIn": self.config.access_ttl.as_secs(),
            "user": self.user_json(user)?,
        });
        let mut response = json_response(StatusCode::OK, &body)?;
        response.headers_mut().insert(header::SET_COOKIE, self.refresh_cookie_header(refresh, false));
        Ok(response)
    }

    fn refresh_cookie_header(&self, value: &str, clear: bool) -> HeaderValue {
        let max_age = if clear {
            cookie::time::Duration::ZERO
        } else {
            cookie::time::Duration::seconds(self.config.refresh_ttl.as_secs() as i64)
        };
        let cookie = Cookie::build((REFRESH_COOKIE, value.to_owned()))
            .http_only(true)
            .same_site(SameSite::Strict)
            .path(REFRESH_PATH)
            .secure(self.config.secure_cookies)
            .max_age(max_age)
            .build();
        HeaderValue::from_str(&cookie.to_string()).unwrap_or(HeaderValue::from_static(""))
    }
}

fn refresh_cookie(request: &Request<Incoming>) -> Option<String> {
    request
        .headers()
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(Cookie::split_parse)
        .filter_map(Result::ok)
        .find(|cookie| cookie.name() == REFRESH_COOKIE && !cookie.value().is_empty())
        .map(|cookie| cookie.value().to_owned())
}

/// 429 with the time until the limiter lets the next attempt through.
pub(super) fn too_many_attempts(wait: std::time::Duration) -> ApiError {
    let mut error =
        ApiError::new(StatusCode::TOO_MANY_REQUESTS, "too_many_attempts", "too many attempts; try again later");
    error.retry_after = Some(wait.as_secs().max(1));
    error
}
