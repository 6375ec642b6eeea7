//! Kubernetes name and label syntax.
//!
//! Mirrors `k8s.io/apimachinery/pkg/util/validation` (`IsQualifiedName`,
//! `IsValidLabelValue`, `IsDNS1123Subdomain`, `IsDNS1123Label`). Each check
//! returns the list of problems in Kubernetes' wording, empty when valid, so a
//! caller can attach them to a field path.

const QUALIFIED_NAME_MAX: usize = 63;
const LABEL_VALUE_MAX: usize = 63;
const DNS1123_LABEL_MAX: usize = 63;
const DNS1123_SUBDOMAIN_MAX: usize = 253;

const QUALIFIED_NAME_FMT: &str = "name part must consist of alphanumeric characters, '-', '_' or '.', \
and must start and end with an alphanumeric character (e.g. 'MyName', 'my.name', or '123-abc')";
const LABEL_VALUE_FMT: &str = "a valid label must be an empty string or consist of alphanumeric characters, \
'-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue', 'my_value', or '12345')";
const DNS1123_SUBDOMAIN_FMT: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric \
characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com')";
const DNS1123_LABEL_FMT: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric \
characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name', or '123-abc')";

/// `([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]`: the shape shared by label
/// names and label values.
fn is_name_shaped(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

/// `[a-z0-9]([-a-z0-9]*[a-z0-9])?`
fn is_dns_label_shaped(s: &str) -> bool {
    let b = s.as_bytes();
    let alnum = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    !b.is_empty()
        && alnum(&b[0])
        && alnum(&b[b.len() - 1])
        && b.iter().all(|c| alnum(c) || *c == b'-')
}

/// `IsQualifiedName`: a label key, `[prefix/]name`.
pub fn is_qualified_name(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    let parts: Vec<&str> = s.split('/').collect();
    let name = match parts.as_slice() {
        [name] => *name,
        [prefix, name] => {
            if prefix.is_empty() {
                errs.push("prefix part must be non-empty".to_string());
            } else {
                errs.extend(
                    is_dns1123_subdomain(prefix)
                        .into_iter()
                        .map(|m| format!("prefix part {m}")),
                );
            }
            *name
        }
        _ => {
            errs.push(format!(
                "a qualified name must consist of alphanumeric characters, '-', '_' or '.', and must \
                 start and end with an alphanumeric character (e.g. 'MyName', 'my.name', or '123-abc') \
                 with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName'); \"{s}\" has \
                 more than one '/'"
            ));
            return errs;
        }
    };
    if name.is_empty() {
        errs.push("name part must be non-empty".to_string());
    } else if name.len() > QUALIFIED_NAME_MAX {
        errs.push(format!(
            "name part must be no more than {QUALIFIED_NAME_MAX} characters"
        ));
    }
    if !name.is_empty() && !is_name_shaped(name) {
        errs.push(QUALIFIED_NAME_FMT.to_string());
    }
    errs
}

/// `IsValidLabelValue`: empty, or at most 63 name-shaped characters.
pub fn is_valid_label_value(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if s.len() > LABEL_VALUE_MAX {
        errs.push(format!("must be no more than {LABEL_VALUE_MAX} characters"));
    }
    if !s.is_empty() && !is_name_shaped(s) {
        errs.push(LABEL_VALUE_FMT.to_string());
    }
    errs
}

/// `IsDNS1123Subdomain`: object and node names.
pub fn is_dns1123_subdomain(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if s.len() > DNS1123_SUBDOMAIN_MAX {
        errs.push(format!(
            "must be no more than {DNS1123_SUBDOMAIN_MAX} characters"
        ));
    }
    if !s.split('.').all(is_dns_label_shaped) {
        errs.push(DNS1123_SUBDOMAIN_FMT.to_string());
    }
    errs
}

/// `IsDNS1123Label`: container and port names.
pub fn is_dns1123_label(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if s.len() > DNS1123_LABEL_MAX {
        errs.push(format!(
            "must be no more than {DNS1123_LABEL_MAX} characters"
        ));
    }
    if !is_dns_label_shaped(s) {
        errs.push(DNS1123_LABEL_FMT.to_string());
    }
    errs
}

/// Environment variable names a unit can carry. Kubernetes allows any
/// printable ASCII except `=`, but systemd 252 (`env_name_is_valid`) takes only
/// letters, digits and `_`, not starting with a digit; a name it refuses would
/// fail the unit's start, so validation holds names to systemd's rule.
/// Returns problems, empty when valid.
pub fn is_env_var_name(s: &str) -> Vec<String> {
    if s.is_empty() {
        return vec!["must be non-empty".to_string()];
    }
    if !s.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_')
        || s.as_bytes()[0].is_ascii_digit()
    {
        return vec![
            "a valid environment variable name must consist of letters, digits and '_', and must \
             not start with a digit (systemd accepts no other names)"
                .to_string(),
        ];
    }
    Vec::new()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Cases from staging/src/k8s.io/apimachinery/pkg/util/validation/validation_test.go
    /// (TestIsQualifiedName, TestIsValidLabelValue, TestIsDNS1123Subdomain, TestIsDNS1123Label).
    #[test]
    fn qualified_names() {
        let long63 = "a".repeat(63);
        let good = [
            "simple",
            "now-with-dashes",
            "1-starts-with-num",
            "1234",
            "simple/simple",
            "now-with-dashes/simple",
            "now-with-dashes/now-with-dashes",
            "now.with.dots/simple",
            "now-with.dashes-and.dots/simple",
            "1-num.2-num/3-num",
            "1234/5678",
            "1.2.3.4/5678",
            "Uppercase_Is_OK_123",
            "example.com/Uppercase_Is_OK_123",
            "requests.storage-foo",
            &long63,
        ];
        for s in good {
            assert!(is_qualified_name(s).is_empty(), "{s} should be valid");
        }
        let long64 = "a".repeat(64);
        let longprefix = format!("{}/b", "a".repeat(254));
        let bad = [
            "",
            "nospecialchars%^=@",
            "cantendwithadash-",
            "-cantstartwithadash-",
            "only/one/slash",
            "Example.com/abc",
            "example_com/abc",
            "example.com/",
            "/simple",
            &long64,
            &longprefix,
        ];
        for s in bad {
            assert!(!is_qualified_name(s).is_empty(), "{s:?} should be invalid");
        }
    }

    #[test]
    fn label_values() {
        let long63 = "a".repeat(63);
        for s in [
            "simple",
            "now-with-dashes",
            "1-starts-with-num",
            "end-with-num-1",
            "1234",
            "",
            "A",
            "AB",
            "Z.a_b-c",
            &long63,
        ] {
            assert!(is_valid_label_value(s).is_empty(), "{s} should be valid");
        }
        let long64 = "a".repeat(64);
        for s in [
            "nospecialchars%^=@",
            "Tama-nui-te-rā.is_Māori.connected",
            "-starts-with-dash",
            "ends-with-dash-",
            ".starts.with.dot",
            "ends.with.dot.",
            &long64,
            "with space",
        ] {
            assert!(
                !is_valid_label_value(s).is_empty(),
                "{s:?} should be invalid"
            );
        }
    }

    #[test]
    fn dns_names() {
        for s in [
            "a",
            "ab",
            "abc",
            "a1",
            "a-1",
            "a--1--2--b",
            "0",
            "01",
            "012",
            "1a",
            "1-a",
            "a.a",
            "ab.a",
            "a.b.c",
            "11.22.33",
        ] {
            assert!(
                is_dns1123_subdomain(s).is_empty(),
                "{s} should be a subdomain"
            );
        }
        for s in [
            "", "A", "ABC", "aBc", "A1", "A-1", "1-A", "-", "a-", "-a", "1-", "-1", "_", "a_",
            "_a", "a_b", "1_", "_1", "1_2", ".", "a.", ".a", "a..b", "1.", ".1", "1..2", " ", "a ",
            " a", "a b", "1 ", " 1", "1 2", "A.a", "aB.a", "ab.A", "A1.a", "a1.A",
        ] {
            assert!(
                !is_dns1123_subdomain(s).is_empty(),
                "{s:?} should not be a subdomain"
            );
        }
        assert!(is_dns1123_subdomain(&"a".repeat(253)).is_empty());
        assert!(!is_dns1123_subdomain(&"a".repeat(254)).is_empty());
        assert!(is_dns1123_label(&"a".repeat(63)).is_empty());
        assert!(!is_dns1123_label(&"a".repeat(64)).is_empty());
        assert!(!is_dns1123_label("a.b").is_empty());
        assert!(is_dns1123_label("fluentd-0").is_empty());
    }

    #[test]
    fn env_names() {
        assert!(is_env_var_name("RUST_LOG").is_empty());
        assert!(
            !is_env_var_name("my.var-1").is_empty(),
            "systemd 252 refuses . and -"
        );
        assert!(is_env_var_name("_x1").is_empty());
        assert!(!is_env_var_name("").is_empty());
        assert!(!is_env_var_name("A=B").is_empty());
        assert!(!is_env_var_name("1A").is_empty());
        assert!(!is_env_var_name("A\nB").is_empty());
    }
}
