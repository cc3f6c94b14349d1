//! Text that people type or name their files with, made safe to show to others.
//!
//! Bidirectional controls (U+202A..U+202E, U+2066..U+2069, the marks U+200E, U+200F and
//! U+061C) reorder what follows them: "clip\u{202E}4pm.exe" displays as "clipexe.mp4".
//! Invisible characters (zero-width space U+200B, word joiner and invisible operators
//! U+2060..U+2064, the deprecated format controls U+206A..U+206F, soft hyphen U+00AD,
//! Mongolian vowel separator U+180E, Hangul fillers, BOM U+FEFF) and the line and paragraph
//! separators (U+2028, U+2029) make two names that look alike differ, or break a line where
//! none shows. No title or chat line needs any of them, so they are
//! removed wherever such text is stored. The joiners U+200C and U+200D stay: scripts and
//! emoji sequences need them.

/// A character that changes how text around it shows while showing nothing itself.
pub fn is_deceptive(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}'
            | '\u{061C}'
            | '\u{115F}'
            | '\u{1160}'
            | '\u{180E}'
            | '\u{200B}'
            | '\u{200E}'
            | '\u{200F}'
            | '\u{2028}'..='\u{202E}'
            | '\u{2060}'..='\u{2064}'
            | '\u{2066}'..='\u{206F}'
            | '\u{3164}'
            | '\u{FEFF}'
            | '\u{FFA0}'
    )
}

/// `text` without bidirectional controls and invisible characters, trimmed.
pub fn without_bidi_controls(text: &str) -> String {
    text.chars().filter(|&c| !is_deceptive(c)).collect::<String>().trim().to_owned()
}

/// A one-line label from untrusted text (a file's name): no controls of any kind, trimmed,
/// at most `max_chars` characters; `None` when nothing is left.
pub fn label(text: &str, max_chars: usize) -> Option<String> {
    let kept: String = text.chars().filter(|&c| !c.is_control() && !is_deceptive(c)).collect();
    let label: String = kept.trim().chars().take(max_chars).collect();
    let label = label.trim_end();
    (!label.is_empty()).then(|| label.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bidi_controls_go_and_text_stays() {
        assert_eq!(without_bidi_controls(" clip\u{202E}4pm.exe "), "clip4pm.exe");
        assert_eq!(without_bidi_controls("\u{2067}שלום\u{2069} world"), "שלום world");
        assert_eq!(without_bidi_controls("\u{200F}"), "");
        assert_eq!(without_bidi_controls("pay\u{200B}pal\u{FEFF}\u{2028}"), "paypal");
        assert_eq!(without_bidi_controls("👩\u{200D}💻"), "👩\u{200D}💻", "joiners stay");
    }

    #[test]
    fn labels_are_trimmed_capped_and_never_blank() {
        assert_eq!(label("   ", 10), None);
        assert_eq!(label("\u{202E}\t", 10), None);
        assert_eq!(label("  Holiday  2026 ", 10).as_deref(), Some("Holiday  2"));
        assert_eq!(label(&"é".repeat(3000), 200).map(|l| l.chars().count()), Some(200));
        assert_eq!(label("a\nb", 10).as_deref(), Some("ab"));
    }
}
