//! `JsonBody<T>`: the extractor of every JSON request body. It answers a body that does not fit
//! the handler's type with a `validation-failed` problem naming the field (`errors[]`, e.g.
//! `{"field": "patient_id", "message": "must be a UUID"}`), never with the parser's own words.
//!
//! Two steps. actix's `Json` extractor reads the body as a raw JSON value, under the app's
//! `JsonConfig` (the body limit, `application/json` or `+json` only, and its error handler for
//! a body that is not well-formed JSON: `bad-request` with the line and column). Then the raw
//! text is deserialized into `T` through `serde_path_to_error`, which tracks the path of the
//! value being read, so a failure names the field it happened in.

use crate::error::{ApiError, FieldError};
use actix_web::dev::Payload;
use actix_web::{FromRequest, HttpRequest, web};
use futures_util::future::LocalBoxFuture;
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;
use std::ops::Deref;

/// A JSON request body deserialized into `T`.
#[derive(Debug)]
pub struct JsonBody<T>(pub T);

impl<T> JsonBody<T> {
    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T> Deref for JsonBody<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T: DeserializeOwned + 'static> FromRequest for JsonBody<T> {
    type Error = actix_web::Error;
    type Future = LocalBoxFuture<'static, Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let raw = web::Json::<Box<RawValue>>::from_request(req, payload);
        Box::pin(async move {
            let raw = raw.await?.into_inner();
            parse(raw.get()).map(JsonBody).map_err(Into::into)
        })
    }
}

/// `text` (well-formed JSON) as a `T`, or the problem that names what does not fit.
pub fn parse<T: DeserializeOwned>(text: &str) -> Result<T, ApiError> {
    // Every request body is an object. (serde would also read a struct from an array of its
    // fields' values, which no client means and the document does not allow.)
    if !text.trim_start().starts_with('{') {
        return Err(ApiError::Validation {
            errors: vec![FieldError { field: "body".into(), message: "must be a JSON object".into() }],
        });
    }
    let mut deserializer = serde_json::Deserializer::from_str(text);
    serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
        let path = error.path().to_string();
        problem(Part::Body, &path, &message_of(error.inner()))
    })
}

/// Where a refused value came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Part {
    Body,
    Query,
}

/// The problem for a value at `path` (`.` is the whole body or query) of `part` that serde
/// refused with `message`.
pub(crate) fn problem(part: Part, path: &str, message: &str) -> ApiError {
    let (whole, unknown) = match part {
        Part::Body => ("body", "is not a field of this body"),
        Part::Query => ("query", "is not a parameter of this operation"),
    };
    // The path of a named member: serde_path_to_error's path ends at it for an unknown field,
    // at its parent for a missing or repeated one.
    let field = |name: &str| {
        if path == "." {
            name.to_owned()
        } else if path == name || path.ends_with(&format!(".{name}")) {
            path.to_owned()
        } else {
            format!("{path}.{name}")
        }
    };
    let named = |prefix: &str| message.strip_prefix(prefix).and_then(|rest| rest.split('`').next());
    let (field, message) = if let Some(name) = named("unknown field `") {
        (field(name), unknown.to_owned())
    } else if let Some(name) = named("missing field `") {
        (field(name), "is required".to_owned())
    } else if let Some(name) = named("duplicate field `") {
        (field(name), "is given more than once".to_owned())
    } else if path == "." {
        (whole.to_owned(), expectation(message))
    } else {
        (path.to_owned(), expectation(message))
    };
    ApiError::Validation { errors: vec![FieldError { field, message }] }
}

/// serde_json's message without its " at line L column C" suffix.
fn message_of(error: &serde_json::Error) -> String {
    let text = error.to_string();
    let suffix = format!(" at line {} column {}", error.line(), error.column());
    match text.strip_suffix(&suffix) {
        Some(message) => message.to_owned(),
        None => text,
    }
}

/// What a value must be, in words for the client, from serde's "invalid type: ..., expected X"
/// family of messages. Anything else (a parser's own message) is not repeated.
fn expectation(message: &str) -> String {
    if message.starts_with("UUID parsing failed") {
        return "must be a UUID".to_owned();
    }
    // A query's numbers are parsed from text (`str::parse`'s messages).
    if [
        "invalid digit found in string",
        "number too large to fit in target type",
        "cannot parse integer from empty string",
    ]
    .contains(&message)
    {
        return "must be a non-negative integer in range".to_owned();
    }
    let Some((_, expected)) = message.split_once(", expected ") else {
        return "has an invalid value".to_owned();
    };
    let expected = match expected {
        "u8" | "u16" | "u32" | "u64" | "usize" => "a non-negative integer in range",
        "i8" | "i16" | "i32" | "i64" | "isize" => "an integer in range",
        "a sequence" => "an array",
        "a map" => "a JSON object",
        "a formatted UUID string" => "a UUID",
        other if other.contains("RFC3339") => "an RFC 3339 date-time",
        other if other.starts_with("struct ") || other.starts_with("a map ") => "a JSON object",
        // serde's list of allowed values: "`a`", "`a` or `b`", "one of `a`, `b`, `c`".
        other if other.starts_with('`') || other.starts_with("one of ") => other,
        other if other.starts_with("a ") || other.starts_with("an ") => other,
        _ => return "has an invalid value".to_owned(),
    };
    format!("must be {expected}")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[expect(dead_code, reason = "only deserialized")]
    struct Body {
        id: uuid::Uuid,
        count: Option<u32>,
        flag: Option<bool>,
        items: Option<Vec<Item>>,
        kind: Option<Kind>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[expect(dead_code, reason = "only deserialized")]
    struct Item {
        name: String,
    }

    #[derive(Debug, Deserialize)]
    #[serde(rename_all = "snake_case")]
    enum Kind {
        First,
        Second,
    }

    fn errors(text: &str) -> Vec<(String, String)> {
        match parse::<Body>(text) {
            Err(ApiError::Validation { errors }) => errors.into_iter().map(|e| (e.field, e.message)).collect(),
            other => panic!("{text}: {other:?}"),
        }
    }

    fn one(field: &str, message: &str) -> Vec<(String, String)> {
        vec![(field.to_owned(), message.to_owned())]
    }

    #[test]
    fn failures_name_the_field_in_plain_words() {
        let id = r#""id": "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b""#;
        assert_eq!(errors(r#"{"id": "0190a1b2"}"#), one("id", "must be a UUID"));
        assert_eq!(errors(r#"{"id": 7}"#), one("id", "must be a UUID"));
        assert_eq!(
            errors(&format!(r#"{{{id}, "count": -1}}"#)),
            one("count", "must be a non-negative integer in range")
        );
        assert_eq!(
            errors(&format!(r#"{{{id}, "count": "3"}}"#)),
            one("count", "must be a non-negative integer in range")
        );
        assert_eq!(errors(&format!(r#"{{{id}, "flag": "yes"}}"#)), one("flag", "must be a boolean"));
        assert_eq!(errors(&format!(r#"{{{id}, "items": {{}}}}"#)), one("items", "must be an array"));
        assert_eq!(errors(&format!(r#"{{{id}, "items": [{{"name": 1}}]}}"#)), one("items[0].name", "must be a string"));
        assert_eq!(
            errors(&format!(r#"{{{id}, "items": [{{"nam": "x"}}]}}"#)),
            one("items[0].nam", "is not a field of this body")
        );
        assert_eq!(errors(&format!(r#"{{{id}, "kind": "third"}}"#)), one("kind", "must be `first` or `second`"));
        assert_eq!(errors(&format!(r#"{{{id}, "extra": 1}}"#)), one("extra", "is not a field of this body"));
        assert_eq!(errors(r#"{"count": 1}"#), one("id", "is required"));
        assert_eq!(errors(&format!(r#"{{{id}, {id}}}"#)), one("id", "is given more than once"));
        assert_eq!(errors("[1]"), one("body", "must be a JSON object"));
        assert_eq!(errors("\"text\""), one("body", "must be a JSON object"));
    }

    #[test]
    fn no_message_repeats_the_parser_or_the_position() {
        for text in [r#"{"id": "0190a1b2"}"#, r#"{"id": "not-a-uuid-at-all-but-36-chars-long!"}"#, r#"{"id": null}"#] {
            for (_, message) in errors(text) {
                assert!(!message.contains("line") && !message.contains("column"), "{message}");
                assert!(!message.contains("parsing") && !message.contains("length"), "{message}");
            }
        }
    }
}
