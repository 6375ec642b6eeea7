//! Kubernetes resource quantities (`100m`, `200Mi`, `1e3`).
//!
//! Mirrors `ParseQuantity` from `k8s.io/apimachinery/pkg/api/resource`
//! (`quantity.go`, `suffix.go`). The accepted shape is
//!
//! ```text
//! <quantity>        ::= <signedNumber><suffix>
//! <signedNumber>    ::= <number> | <sign><number>
//! <sign>            ::= "+" | "-"
//! <number>          ::= <digits> | <digits>.<digits> | <digits>. | .<digits>
//! <suffix>          ::= <binarySI> | <decimalExponent> | <decimalSI>
//! <binarySI>        ::= Ki | Mi | Gi | Ti | Pi | Ei            (powers of 1024)
//! <decimalSI>       ::= n | u | m | "" | k | M | G | T | P | E (powers of 1000)
//! <decimalExponent> ::= "e" <signedInteger> | "E" <signedInteger>
//! ```
//!
//! The value is kept exactly, as a big decimal (no floating point), and is
//! normalised the way Kubernetes normalises a parsed quantity:
//!
//! - a non-zero value is rounded *up* (away from zero) to a multiple of
//!   10⁻⁹ (`1.1n` becomes `2n`), so asking for a tiny amount never yields zero;
//! - a binary-SI value (`Ki` … `Ei`) larger than 2⁶³−1 in magnitude is capped
//!   at 2⁶³−1 (`9Ei` is 2⁶³−1); decimal values are not capped, only the
//!   integer accessors saturate.
//!
//! Where this module differs from the Go implementation, on purpose:
//!
//! - Go's scanner accepts a number without any digit (`"Mi"`, `"."`, `"-"`
//!   all parse as zero there); the documented grammar requires digits, and so
//!   does this module ([`QuantityError::Numeric`]).
//! - Go narrows a decimal exponent to 32 bits by truncation (`1e4294967297`
//!   parses as `1e1`); this module rejects an exponent outside
//!   `±(2³¹−1)` instead ([`QuantityError::Suffix`]). Exponents inside that
//!   range are kept symbolically, so even `1e2147483647` costs a few bytes.
//! - The integer accessors ([`Quantity::value`], [`Quantity::milli_value`])
//!   saturate at the `i64` bounds instead of overflowing.

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

/// The pattern Kubernetes quotes when a quantity is malformed.
const SPLIT_RE: &str = "^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$";

/// Characters the Go scanner accepts in the alphabetic part of a suffix.
const SUFFIX_LETTERS: &[u8] = b"eEinumkKMGTP";

/// Parsed values are rounded up to a multiple of 10^NANO_EXPONENT.
const NANO_EXPONENT: i64 = -9;

/// Largest accepted magnitude of a decimal exponent (`int32` scale in Go).
const MAX_EXPONENT: u64 = i32::MAX as u64;

/// Why a string is not a Kubernetes quantity.
///
/// The three kinds and their messages are those of `ErrFormatWrong`,
/// `ErrNumeric` and `ErrSuffix` in `quantity.go`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum QuantityError {
    /// The string is empty or does not have the shape number-then-suffix
    /// (stray characters, spaces, a second `.`, ...).
    #[error("quantities must match the regular expression '{SPLIT_RE}'")]
    Format,
    /// The number part has no digit at all (`"Mi"`, `"."`, `"-"`).
    #[error("unable to parse numeric part of quantity")]
    Numeric,
    /// The suffix is not one Kubernetes knows (`1mi`, `1ki`, `1e`, `10m500`),
    /// or its decimal exponent is outside `±(2³¹−1)`.
    #[error("unable to parse quantity's suffix")]
    Suffix,
}

/// A parsed Kubernetes quantity, exact (no floating point).
///
/// The value is held as a sign, a string of decimal digits and a power of
/// ten, already normalised as Kubernetes does on parse (rounded up to 10⁻⁹,
/// binary-SI values capped at 2⁶³−1). The original spelling is kept for
/// [`Display`](fmt::Display).
///
/// `==` is structural: it also compares the original spelling, so `1k` and
/// `1000` are *not* `==`. Use [`Quantity::cmp_exact`] to compare values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quantity {
    /// Sign of a non-zero value; always `false` for zero.
    negative: bool,
    /// Decimal digits (0–9, not ASCII), most significant first, with neither
    /// leading nor trailing zeros; empty for zero.
    digits: Vec<u8>,
    /// The magnitude is `digits × 10^exponent`; `0` for zero.
    exponent: i64,
    /// The string this quantity was parsed from.
    original: String,
}

/// What a suffix multiplies the number by.
#[derive(Debug, Clone, Copy)]
enum Multiplier {
    /// `× 10^n` (decimal SI or decimal exponent).
    Decimal(i64),
    /// `× 2^n` (binary SI, n ≤ 60).
    Binary(u32),
}

/// The lexical pieces of a quantity string.
struct Pieces<'a> {
    negative: bool,
    int_digits: &'a [u8],
    frac_digits: &'a [u8],
    suffix: &'a str,
}

/// Splits `s` into sign, integer digits, fraction digits and suffix, with the
/// same acceptance as Go's `parseQuantityString`: the suffix is any run of
/// `[eEinumkKMGTP]`, then an optional sign, then digits, then the end.
fn split(s: &str) -> Result<Pieces<'_>, QuantityError> {
    let b = s.as_bytes();
    let digits_from = |mut i: usize| {
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        i
    };

    let (negative, mut i) = match b.first() {
        None => return Err(QuantityError::Format),
        Some(b'-') => (true, 1),
        Some(b'+') => (false, 1),
        Some(_) => (false, 0),
    };

    let int_end = digits_from(i);
    let int_digits = &b[i..int_end];
    i = int_end;

    let mut frac_digits: &[u8] = &[];
    if b.get(i) == Some(&b'.') {
        let frac_end = digits_from(i + 1);
        frac_digits = &b[i + 1..frac_end];
        i = frac_end;
    }

    let suffix_start = i;
    while i < b.len() && SUFFIX_LETTERS.contains(&b[i]) {
        i += 1;
    }
    if matches!(b.get(i), Some(b'+' | b'-')) {
        i += 1;
    }
    if digits_from(i) != b.len() {
        return Err(QuantityError::Format);
    }

    Ok(Pieces {
        negative,
        int_digits,
        frac_digits,
        // Everything before `suffix_start` is ASCII, so this is a char boundary.
        suffix: &s[suffix_start..],
    })
}

/// Maps a suffix to its multiplier (Go's `quantitySuffixer.interpret`).
fn interpret(suffix: &str) -> Result<Multiplier, QuantityError> {
    use Multiplier::{Binary, Decimal};
    Ok(match suffix {
        "n" => Decimal(-9),
        "u" => Decimal(-6),
        "m" => Decimal(-3),
        "" => Decimal(0),
        "k" => Decimal(3),
        "M" => Decimal(6),
        "G" => Decimal(9),
        "T" => Decimal(12),
        "P" => Decimal(15),
        "E" => Decimal(18),
        "Ki" => Binary(10),
        "Mi" => Binary(20),
        "Gi" => Binary(30),
        "Ti" => Binary(40),
        "Pi" => Binary(50),
        "Ei" => Binary(60),
        _ => {
            let rest = suffix
                .strip_prefix(['e', 'E'])
                .ok_or(QuantityError::Suffix)?;
            Decimal(parse_exponent(rest).ok_or(QuantityError::Suffix)?)
        }
    })
}

/// Parses a decimal exponent: an optional sign and at least one digit
/// (`strconv.ParseInt(s, 10, 64)`), limited to `±(2³¹−1)`.
fn parse_exponent(s: &str) -> Option<i64> {
    let (negative, digits) = match s.as_bytes().first()? {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    if digits.is_empty() || !digits.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let significant = digits.trim_start_matches('0');
    // 2³¹−1 has ten digits; anything longer is out of range (and of u64 too).
    if significant.len() > 10 {
        return None;
    }
    let magnitude: u64 = if significant.is_empty() {
        0
    } else {
        significant.parse().ok()?
    };
    if magnitude > MAX_EXPONENT {
        return None;
    }
    let magnitude = i64::try_from(magnitude).ok()?;
    Some(if negative { -magnitude } else { magnitude })
}

/// Drops leading zeros, and moves trailing zeros into `exponent`. Leaves
/// `digits` empty (and `exponent` 0) for zero.
fn normalize(digits: &mut Vec<u8>, exponent: &mut i64) {
    let Some(first) = digits.iter().position(|&d| d != 0) else {
        digits.clear();
        *exponent = 0;
        return;
    };
    digits.drain(..first);
    let kept = digits.iter().rposition(|&d| d != 0).map_or(0, |p| p + 1);
    *exponent += (digits.len() - kept) as i64;
    digits.truncate(kept);
}

/// `digits × factor`, in place (digits most significant first).
fn multiply(digits: &mut Vec<u8>, factor: u64) {
    let mut carry: u128 = 0;
    for d in digits.iter_mut().rev() {
        let t = u128::from(*d) * u128::from(factor) + carry;
        *d = (t % 10) as u8;
        carry = t / 10;
    }
    let mut head = Vec::new();
    while carry > 0 {
        head.push((carry % 10) as u8);
        carry /= 10;
    }
    head.reverse();
    digits.splice(0..0, head);
}

/// `digits + 1`, in place.
fn increment(digits: &mut Vec<u8>) {
    for d in digits.iter_mut().rev() {
        if *d == 9 {
            *d = 0;
        } else {
            *d += 1;
            return;
        }
    }
    digits.insert(0, 1);
}

/// Rounds a normalised non-zero magnitude up to a multiple of 10⁻⁹.
fn round_up_to_nano(digits: &mut Vec<u8>, exponent: &mut i64) {
    if digits.is_empty() || *exponent >= NANO_EXPONENT {
        return;
    }
    // Digits that stay at or above the 10⁻⁹ place. The dropped tail always
    // ends in a non-zero digit (normalised), so the result is incremented.
    let keep = digits.len() as i64 + (*exponent - NANO_EXPONENT);
    if keep <= 0 {
        digits.clear();
        digits.push(1);
    } else {
        digits.truncate(keep as usize);
        increment(digits);
    }
    *exponent = NANO_EXPONENT;
    normalize(digits, exponent);
}

/// Orders two normalised magnitudes.
fn cmp_magnitude(a_digits: &[u8], a_exp: i64, b_digits: &[u8], b_exp: i64) -> Ordering {
    match (a_digits.is_empty(), b_digits.is_empty()) {
        (true, true) => return Ordering::Equal,
        (true, false) => return Ordering::Less,
        (false, true) => return Ordering::Greater,
        (false, false) => {}
    }
    // Position just above the leading digit decides first; with equal
    // positions, and no trailing zeros, plain lexicographic order is the
    // numeric order (a proper prefix is the smaller number).
    let a_top = a_digits.len() as i64 + a_exp;
    let b_top = b_digits.len() as i64 + b_exp;
    a_top.cmp(&b_top).then_with(|| a_digits.cmp(b_digits))
}

/// The digits of 2⁶³−1, Kubernetes' cap for binary-SI quantities.
fn max_int64_digits() -> Vec<u8> {
    i64::MAX.to_string().bytes().map(|c| c - b'0').collect()
}

impl FromStr for Quantity {
    type Err = QuantityError;

    /// Parses a quantity (Go's `resource.ParseQuantity`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let pieces = split(s)?;
        let multiplier = interpret(pieces.suffix)?;
        if pieces.int_digits.is_empty() && pieces.frac_digits.is_empty() {
            return Err(QuantityError::Numeric);
        }

        let mut digits: Vec<u8> = pieces
            .int_digits
            .iter()
            .chain(pieces.frac_digits)
            .map(|c| c - b'0')
            .collect();
        let mut exponent = -(pieces.frac_digits.len() as i64);
        normalize(&mut digits, &mut exponent);

        if !digits.is_empty() {
            match multiplier {
                Multiplier::Decimal(n) => exponent += n,
                Multiplier::Binary(n) => {
                    multiply(&mut digits, 1u64 << n);
                    normalize(&mut digits, &mut exponent);
                }
            }
            round_up_to_nano(&mut digits, &mut exponent);
            if matches!(multiplier, Multiplier::Binary(_)) {
                let max = max_int64_digits();
                if cmp_magnitude(&digits, exponent, &max, 0) == Ordering::Greater {
                    digits = max;
                    exponent = 0;
                }
            }
        }

        Ok(Quantity {
            negative: pieces.negative && !digits.is_empty(),
            digits,
            exponent,
            original: s.to_owned(),
        })
    }
}

impl Quantity {
    /// True when the value is below zero (`-0` is not negative).
    pub fn is_negative(&self) -> bool {
        self.negative
    }

    /// True when the value is zero (`0`, `0Mi`, `-0.0e5`, ...).
    pub fn is_zero(&self) -> bool {
        self.digits.is_empty()
    }

    /// The value as an integer, rounded up (Go's `Quantity.Value()`).
    ///
    /// "Up" is away from zero, as Go documents and does for ordinary
    /// quantities: `100m` gives 1 and `-100m` gives −1. Saturates at
    /// `i64::MAX` (and at `i64::MIN` for negative values) instead of
    /// overflowing.
    pub fn value(&self) -> i64 {
        self.scaled_value(0)
    }

    /// The value times 1000, rounded up like [`Quantity::value`]
    /// (Go's `Quantity.MilliValue()`): `0.5` gives 500, `1n` gives 1.
    /// Saturates at the `i64` bounds.
    pub fn milli_value(&self) -> i64 {
        self.scaled_value(3)
    }

    /// Compares the values exactly (Go's `Quantity.Cmp`): `1k` equals
    /// `1000`, `1Ki` is greater than `1k`.
    pub fn cmp_exact(&self, other: &Quantity) -> Ordering {
        let sign = |q: &Quantity| match (q.is_zero(), q.negative) {
            (true, _) => 0,
            (false, true) => -1,
            (false, false) => 1,
        };
        match sign(self).cmp(&sign(other)) {
            Ordering::Equal => {}
            unequal => return unequal,
        }
        let magnitude = cmp_magnitude(&self.digits, self.exponent, &other.digits, other.exponent);
        if self.negative {
            magnitude.reverse()
        } else {
            magnitude
        }
    }

    /// `value × 10^shift`, rounded away from zero, saturating.
    fn scaled_value(&self, shift: i64) -> i64 {
        if self.is_zero() {
            return 0;
        }
        let exponent = self.exponent + shift;
        // Number of digits of the integer part of the magnitude.
        let int_len = self.digits.len() as i64 + exponent;
        // 10^20 > 2^63: more integer digits than that always saturates.
        let magnitude: Option<u128> = if int_len > 20 {
            None
        } else if exponent >= 0 {
            let zeros = std::iter::repeat_n(0u8, exponent as usize);
            Some(accumulate(self.digits.iter().copied().chain(zeros)))
        } else {
            // A fractional part is present (no trailing zeros), so round up.
            let int_part = &self.digits[..int_len.max(0) as usize];
            Some(accumulate(int_part.iter().copied()) + 1)
        };
        let limit = if self.negative {
            u128::from(i64::MIN.unsigned_abs())
        } else {
            i64::MAX as u128
        };
        match magnitude {
            Some(m) if m <= limit => {
                let m = m as i128;
                (if self.negative { -m } else { m }) as i64
            }
            _ if self.negative => i64::MIN,
            _ => i64::MAX,
        }
    }
}

/// Reads at most ~21 decimal digits into a `u128` (callers bound the count).
fn accumulate(digits: impl Iterator<Item = u8>) -> u128 {
    digits.fold(0u128, |acc, d| acc * 10 + u128::from(d))
}

impl fmt::Display for Quantity {
    /// Writes the quantity as it was spelled on input.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.original)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(s: &str) -> Quantity {
        s.parse().unwrap()
    }

    #[test]
    fn normalised_representation() {
        let x = q("001.2300k");
        assert_eq!((x.digits.as_slice(), x.exponent), (&[1u8, 2, 3][..], 1));
        let x = q("1.5Gi");
        assert_eq!(x.value(), 1_610_612_736);
        let x = q("0.0000000000001");
        assert_eq!((x.digits.as_slice(), x.exponent), (&[1u8][..], -9));
        let x = q("0.9999999999");
        assert_eq!((x.digits.as_slice(), x.exponent), (&[1u8][..], 0));
    }

    #[test]
    fn exponent_bounds() {
        assert_eq!(parse_exponent("2147483647"), Some(2_147_483_647));
        assert_eq!(parse_exponent("-2147483647"), Some(-2_147_483_647));
        assert_eq!(parse_exponent("2147483648"), None);
        assert_eq!(parse_exponent("-2147483648"), None);
        assert_eq!(parse_exponent("000000000000000000005"), Some(5));
        assert_eq!(parse_exponent("+"), None);
        assert_eq!(parse_exponent(""), None);
    }
}
