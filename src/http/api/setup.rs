//! `/api/setup`: the first visitor of a new box creates its first organization and admin,
//! proving they hold the box by the one-time setup code ([`crate::auth::setup`]). Once any
//! account exists the route only answers that setup is done.

use std::net::SocketAddr;

use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use serde::Deserialize;

use super::auth::too_many_attempts;
use super::users::{hash_password, valid_email};
use super::{Api, json_response, read_json};
use crate::auth::Role;
use crate::http::Body;
use crate::http::error::ApiError;
use crate::store::NewUser;

#[derive(Deserialize)]
struct Setup {
    code: String,
    organization: String,
    email: String,
    password: String,
}

impl Api {
    pub(super) fn setup_status(&self) -> Result<Response<Body>, ApiError> {
        json_response(StatusCode::OK, &serde_json::json!({ "needed": !self.store.has_users() }))
    }

    pub(super) async fn setup(
        &self,
        request: Request<Incoming>,
        remote: SocketAddr,
    ) -> Result<Response<Body>, ApiError> {
        let setup: Setup = read_json(request).await?;
        if let Err(wait) = self.limiter.setup(remote.ip()) {
            tracing::warn!(address = %remote.ip(), "setup attempts over the limit");
            return Err(too_many_attempts(wait));
        }
        // One setup at a time: two visitors racing must not both become the first admin.
        let _one_at_a_time = self.setup_lock.lock().await;
        if self.store.has_users() {
            return Err(ApiError::new(StatusCode::CONFLICT, "already_set_up", "this box is already set up; log in"));
        }
        if !self.setup_code.matches(&setup.code) {
            tracing::warn!(address = %remote.ip(), "wrong setup code");
            return Err(ApiError::new(StatusCode::FORBIDDEN, "wrong_setup_code", "that is not this box's setup code"));
        }
        let organization = crate::text::without_bidi_controls(&setup.organization);
        let organization = organization.as_str();
        if organization.is_empty() || organization.chars().count() > 100 {
            return Err(ApiError::bad_request("an organization name of 1 to 100 characters is required"));
        }
        let email = valid_email(&setup.email)?.to_owned();
        let password_hash = hash_password(setup.password).await?;
        let org = self.store.create_org(organization)?;
        let user =
            self.store.create_user(NewUser { org_id: &org.id, email: &email, role: Role::Admin, password_hash })?;
        let refresh = self.store.issue_refresh(&user.id, &user.org_id, self.config.refresh_ttl.as_millis() as u64)?;
        self.store.durable().await?;
        if let Err(error) = self.setup_code.consume() {
            tracing::error!(%error, path = %self.setup_code.path().display(), "removing the used setup code failed");
        }
        tracing::info!(user = user.id, org = org.id, "first admin created with the setup code");
        let mut response = self.session_response(&user, &refresh)?;
        *response.status_mut() = StatusCode::CREATED;
        Ok(response)
    }
}
