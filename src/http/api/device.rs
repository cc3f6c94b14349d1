//! `/api/device`: the box's state for its admins, and the identify blink that helps a
//! technician find it.

use hyper::{Response, StatusCode};

use super::{ADMINS, Api, Caller, json_response};
use crate::http::Body;
use crate::http::error::ApiError;

impl Api {
    pub(super) fn device_status(&self, caller: &Caller) -> Result<Response<Body>, ApiError> {
        caller.require(ADMINS)?;
        json_response(StatusCode::OK, &self.device.status())
    }

    pub(super) fn identify(&self, caller: &Caller) -> Result<Response<Body>, ApiError> {
        caller.require(ADMINS)?;
        tracing::info!(user = caller.user.id, "identify requested");
        self.device.identify();
        json_response(StatusCode::ACCEPTED, &self.device.status())
    }
}
