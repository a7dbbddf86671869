//! Opt-out keywords in inbound messages.

/// The words that withdraw consent to messaging: English and German, as patients write them.
const STOP_KEYWORDS: [&str; 4] = ["STOP", "UNSUBSCRIBE", "STOPP", "ABMELDEN"];

/// Whether a message is an opt-out: exactly one of STOP, UNSUBSCRIBE, STOPP or ABMELDEN, in any
/// letter case, with any surrounding Unicode whitespace. Nothing else counts ("stop it",
/// "STOP." or "please stop" are ordinary messages), so a patient's sentence is never read as a
/// withdrawal of consent. Case is folded for ASCII letters only, so look-alikes such as the long
/// s ("ſtop") are not keywords.
pub fn is_stop_keyword(text: &str) -> bool {
    let word = text.trim();
    STOP_KEYWORDS.iter().any(|keyword| word.eq_ignore_ascii_case(keyword))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyword_table() {
        let cases: &[(&str, bool)] = &[
            ("STOP", true),
            ("stop", true),
            ("Stop", true),
            ("sToP", true),
            ("  STOP  ", true),
            ("\tstop\n", true),
            ("\u{00a0}STOP\u{3000}", true),  // no-break space, ideographic space
            ("\u{2003}stopp\u{2028}", true), // em space, line separator
            ("UNSUBSCRIBE", true),
            ("unsubscribe", true),
            ("STOPP", true),
            ("Stopp", true),
            ("ABMELDEN", true),
            ("abmelden", true),
            ("", false),
            ("   ", false),
            ("stop it", false),
            ("please stop", false),
            ("STOP.", false),
            ("STOP!", false),
            ("S TOP", false),
            ("stopped", false),
            ("STOPPP", false),
            ("unsubscribe me", false),
            ("abmelden bitte", false),
            ("ſtop", false),
            ("STOP\u{200b}", false), // zero-width space is not whitespace
            ("QUIT", false),
            ("CANCEL", false),
        ];
        for (text, expected) in cases {
            assert_eq!(is_stop_keyword(text), *expected, "{text:?}");
        }
    }
}
