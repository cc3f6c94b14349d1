//! `/api/users`: an organization's admins manage its users.

use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use serde::Deserialize;

use super::{ADMINS, Api, Caller, json_response, no_content, read_json};
use crate::auth::{Role, password};
use crate::http::Body;
use crate::http::error::ApiError;
use crate::store::{NewUser, StoreError};

#[derive(Deserialize)]
struct CreateUser {
    email: String,
    password: String,
    role: Role,
}

#[derive(Deserialize)]
struct UpdateUser {
    role: Role,
}

impl Api {
    pub(super) fn list_users(&self, caller: &Caller) -> Result<Response<Body>, ApiError> {
        caller.require(ADMINS)?;
        let users = self.store.users_of(&caller.user.org_id)?;
        let items: Result<Vec<_>, _> = users.iter().map(|user| self.user_json(user)).collect();
        json_response(StatusCode::OK, &serde_json::json!({ "items": items? }))
    }

    pub(super) async fn create_user(
        &self,
        caller: &Caller,
        request: Request<Incoming>,
    ) -> Result<Response<Body>, ApiError> {
        caller.require(ADMINS)?;
        let new: CreateUser = read_json(request).await?;
        let email = valid_email(&new.email)?;
        let password_hash = hash_password(new.password).await?;
        // Hashing takes a while: whether the caller is still an admin is checked at the write.
        let new = NewUser { org_id: &caller.user.org_id, email, role: new.role, password_hash };
        let user = self.store.create_user_by(&caller.user.id, new)?;
        self.store.durable().await?;
        tracing::info!(user = user.id, org = user.org_id, by = caller.user.id, "user created");
        json_response(StatusCode::CREATED, &self.user_json(&user)?)
    }

    pub(super) async fn update_user(
        &self,
        caller: &Caller,
        id: &str,
        request: Request<Incoming>,
    ) -> Result<Response<Body>, ApiError> {
        caller.require(ADMINS)?;
        let update: UpdateUser = read_json(request).await?;
        // The last-admin rule is checked in the store's transaction: two admins demoting each
        // other at once cannot both succeed.
        // So is the caller's own authority: an admin demoted a moment ago changes nothing.
        let user = self.store.set_role(&caller.user.org_id, &caller.user.id, id, update.role).map_err(user_error)?;
        self.store.durable().await?;
        json_response(StatusCode::OK, &self.user_json(&user)?)
    }

    pub(super) async fn delete_user(&self, caller: &Caller, id: &str) -> Result<Response<Body>, ApiError> {
        caller.require(ADMINS)?;
        let org = &caller.user.org_id;
        self.store.delete_user(org, &caller.user.id, id).map_err(user_error)?;
        self.store.durable().await?;
        tracing::info!(user = id, org, by = caller.user.id, "user deleted");
        Ok(no_content())
    }
}

/// A user of another organization answers as a missing one.
fn user_error(error: StoreError) -> ApiError {
    match error {
        StoreError::NotFound => ApiError::not_found("user"),
        other => other.into(),
    }
}

/// The trimmed address, if it looks like one.
pub(super) fn valid_email(email: &str) -> Result<&str, ApiError> {
    let email = email.trim();
    let odd = |c: char| c.is_whitespace() || c.is_control() || crate::text::is_deceptive(c);
    if email.len() > super::auth::MAX_EMAIL_BYTES || !email.contains('@') || email.chars().any(odd) {
        return Err(ApiError::bad_request("a valid email address is required"));
    }
    Ok(email)
}

/// Hashes off the async threads (argon2 takes tens of milliseconds on a Pi); a password the
/// policy refuses is a bad request.
pub(super) async fn hash_password(password: String) -> Result<String, ApiError> {
    tokio::task::spawn_blocking(move || password::hash(&password))
        .await
        .map_err(|error| ApiError::internal("hashing a password", error))?
        .map_err(|error| ApiError::bad_request(error.to_string()))
}
