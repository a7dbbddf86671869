//! The `closed_set!` macro: one list of variants and their one spelling, from which `ALL`,
//! `as_str`, `FromStr`, `Display` and serde are all derived, so the stored, serialised and parsed
//! spellings cannot drift apart.
//!
//! The error a failed parse returns is the caller's (`error: Path`, a type with
//! `fn unknown_value(field: &'static str, input: &str, expected: String) -> Self`), so this module
//! depends on nothing else in the crate. [`UnknownValue`] is such a type for the sets that the
//! crate's error itself names (the lifecycle's states and actions); it converts into
//! [`crate::ConsentError::UnknownValue`].

/// At most this many characters of an unknown input are echoed in an error.
pub const ECHO_LIMIT: usize = 64;

/// The first [`ECHO_LIMIT`] characters of `input`: enough to recognise a typo, too few to flood
/// a log with a hostile or huge value.
pub(crate) fn echo(input: &str) -> String {
    input.chars().take(ECHO_LIMIT).collect()
}

/// A string that is not a member of the closed set `field`, whose members are `expected`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {field} {value:?}; expected one of {expected}")]
pub struct UnknownValue {
    pub field: &'static str,
    /// At most [`ECHO_LIMIT`] characters of the input.
    pub value: String,
    pub expected: String,
}

impl UnknownValue {
    /// What `closed_set!`'s `FromStr` returns for `input` (the macro calls every error type's
    /// constructor by this name, hence the type's own).
    #[allow(clippy::self_named_constructors)]
    pub(crate) fn unknown_value(field: &'static str, input: &str, expected: String) -> Self {
        Self { field, value: echo(input), expected }
    }
}

macro_rules! closed_set {
    (
        $(#[$meta:meta])*
        pub enum $name:ident (field: $field:literal, error: $error:path) {
            $( $(#[$vmeta:meta])* $variant:ident => $text:literal, )+
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum $name {
            $( $(#[$vmeta])* $variant, )+
        }

        impl $name {
            /// Every member, in declaration order.
            pub const ALL: &'static [$name] = &[ $( $name::$variant, )+ ];

            /// The one stored and serialised spelling (stable snake_case).
            pub const fn as_str(self) -> &'static str {
                match self {
                    $( $name::$variant => $text, )+
                }
            }
        }

        impl ::std::str::FromStr for $name {
            type Err = $error;
            /// Exact spelling only: no case folding or trimming, so one value has one spelling.
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $( $text => Ok($name::$variant), )+
                    _ => Err(<$error>::unknown_value($field, s, [$( $text ),+].join(", "))),
                }
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl ::serde::Serialize for $name {
            fn serialize<S: ::serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(self.as_str())
            }
        }

        impl<'de> ::serde::Deserialize<'de> for $name {
            fn deserialize<D: ::serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let raw = <String as ::serde::Deserialize>::deserialize(deserializer)?;
                raw.parse().map_err(::serde::de::Error::custom)
            }
        }
    };
}

pub(crate) use closed_set;
