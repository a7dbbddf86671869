//! `QueryParams<T>`: the extractor of every operation's query parameters. Like `JsonBody`, it
//! answers a parameter that does not fit with a `validation-failed` problem naming it
//! (`{"field": "limit", "message": "must be a non-negative integer in range"}`, an unknown
//! parameter as `is not a parameter of this operation`), through `serde_path_to_error` over the
//! same `serde_urlencoded` reading actix's `Query` does.

use crate::error::ApiError;
use crate::json_body::{Part, problem};
use actix_web::dev::Payload;
use actix_web::{FromRequest, HttpRequest};
use serde::de::DeserializeOwned;
use std::future::{Ready, ready};
use std::ops::Deref;

/// An operation's query parameters deserialized into `T`.
#[derive(Debug)]
pub struct QueryParams<T>(pub T);

impl<T> QueryParams<T> {
    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T> Deref for QueryParams<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T: DeserializeOwned> FromRequest for QueryParams<T> {
    type Error = actix_web::Error;
    type Future = Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(parse(req.query_string()).map(QueryParams).map_err(Into::into))
    }
}

/// `query` (the URL's query string, without `?`) as a `T`, or the problem naming what does not fit.
pub fn parse<T: DeserializeOwned>(query: &str) -> Result<T, ApiError> {
    let deserializer = serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
    serde_path_to_error::deserialize(deserializer).map_err(|error| {
        let path = error.path().to_string();
        problem(Part::Query, &path, &error.inner().to_string())
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[expect(dead_code, reason = "only deserialized")]
    struct Params {
        id: Option<uuid::Uuid>,
        limit: Option<u32>,
        from: Option<String>,
    }

    fn errors(query: &str) -> Vec<(String, String)> {
        match parse::<Params>(query) {
            Err(ApiError::Validation { errors }) => errors.into_iter().map(|e| (e.field, e.message)).collect(),
            other => panic!("{query}: {other:?}"),
        }
    }

    #[test]
    fn failures_name_the_parameter() {
        let one = |field: &str, message: &str| vec![(field.to_owned(), message.to_owned())];
        assert_eq!(errors("limit=abc"), one("limit", "must be a non-negative integer in range"));
        assert_eq!(errors("limit=-1"), one("limit", "must be a non-negative integer in range"));
        assert_eq!(errors("limit=99999999999"), one("limit", "must be a non-negative integer in range"));
        assert_eq!(errors("id=12"), one("id", "must be a UUID"));
        assert_eq!(errors("sort=name"), one("sort", "is not a parameter of this operation"));
        assert_eq!(errors("from=a&from=b"), one("from", "is given more than once"));
        assert!(parse::<Params>("limit=5&from=2026-01-01T00:00:00Z").is_ok());
        assert!(parse::<Params>("").is_ok());
    }
}
