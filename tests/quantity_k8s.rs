//! Kubernetes resource quantities, checked against the cases of the
//! Kubernetes test suite (`k8s.io/apimachinery/pkg/api/resource`).
//!
//! Each case names where it comes from in `source`: the Kubernetes test
//! (`quantity_test.go` and friends), the grammar in `quantity.go`, or
//! "hostset" where this crate deliberately differs from Go (see the
//! `hostset::quantity` module docs). Expected values are Go's expected decimal
//! value (`decQuantity(...)` in the Go tables), written out as a plain decimal
//! in `exact`; `value`/`milli` are that value rounded away from zero (Go's
//! `Value()`/`MilliValue()`), saturated at the `i64` bounds.

use std::cmp::Ordering;

use hostset::quantity::{Quantity, QuantityError};
use proptest::prelude::*;

/// `TestQuantityParse`'s table. Go also runs every entry with a `-` and a `+`
/// prefix; `negated_and_plus_variants` does the same.
const PARSE: &str =
    "staging/src/k8s.io/apimachinery/pkg/api/resource/quantity_test.go TestQuantityParse";
const PARSE_STRING: &str =
    "staging/src/k8s.io/apimachinery/pkg/api/resource/quantity_test.go TestParseQuantityString";
const PARSE_EMIT: &str =
    "staging/src/k8s.io/apimachinery/pkg/api/resource/quantity_test.go TestQuantityParseEmit";
const PARSE_BOUNDS: &str =
    "staging/src/k8s.io/apimachinery/pkg/api/resource/quantity_test.go TestParseQuantity";
const NON_NUMERIC: &str = "staging/src/k8s.io/apimachinery/pkg/api/resource/quantity_test.go TestQuantityParseNonNumericPanic";
const ROUND_UP: &str =
    "staging/src/k8s.io/apimachinery/pkg/api/resource/quantity_test.go TestQuantityRoundUp";
const NEW_SET: &str =
    "staging/src/k8s.io/apimachinery/pkg/api/resource/quantity_test.go TestNewSet";
const MILLI_NEW_SET: &str =
    "staging/src/k8s.io/apimachinery/pkg/api/resource/quantity_test.go TestMilliNewSet";
const NEW_SCALED_SET: &str =
    "staging/src/k8s.io/apimachinery/pkg/api/resource/quantity_test.go TestNewScaledSet";
const JSON_WHITESPACE: &str =
    "staging/src/k8s.io/apimachinery/pkg/api/resource/quantity_test.go TestJSONWhitespace";
const CMP: &str =
    "staging/src/k8s.io/apimachinery/pkg/api/resource/quantity_test.go TestQuantityCmp";
const ADD_ZERO: &str = "staging/src/k8s.io/apimachinery/pkg/api/resource/quantity_test.go TestQuantityAddZeroPreservesSuffix";
const STRING: &str =
    "staging/src/k8s.io/apimachinery/pkg/api/resource/quantity_test.go TestQuantityString";
const EXAMPLE: &str =
    "staging/src/k8s.io/apimachinery/pkg/api/resource/quantity_example_test.go ExampleMustParse";
/// Forms the documented grammar allows (or forbids) that the Go tables only
/// cover through their `+`/`-` loops or with other digits.
const GRAMMAR: &str = "staging/src/k8s.io/apimachinery/pkg/api/resource/quantity.go Quantity doc (serialization grammar)";
const HOSTSET_LIMIT: &str =
    "hostset: exponents kept symbolically within ±(2^31-1), Go's int32 scale";
const HOSTSET_DIGITS: &str =
    "hostset: the grammar's <number> needs a digit (Go's scanner reads it as 0)";
const HOSTSET_EXP: &str = "hostset: exponent outside int32 rejected (Go truncates it to 32 bits)";

const MAX: i64 = i64::MAX;
const MIN: i64 = i64::MIN;

struct Valid {
    input: &'static str,
    /// The exact value after Kubernetes' normalisation, as a plain decimal
    /// (empty when too large to write out).
    exact: &'static str,
    value: i64,
    milli: i64,
    source: &'static str,
}

const fn ok(
    input: &'static str,
    exact: &'static str,
    value: i64,
    milli: i64,
    source: &'static str,
) -> Valid {
    Valid {
        input,
        exact,
        value,
        milli,
        source,
    }
}

#[rustfmt::skip]
fn valid_cases() -> Vec<Valid> {
    vec![
        // TestQuantityParse: zeros.
        ok("0", "0", 0, 0, PARSE),
        ok("0n", "0", 0, 0, PARSE),
        ok("0u", "0", 0, 0, PARSE),
        ok("0m", "0", 0, 0, PARSE),
        ok("0Ki", "0", 0, 0, PARSE),
        ok("0k", "0", 0, 0, PARSE),
        ok("0Mi", "0", 0, 0, PARSE),
        ok("0M", "0", 0, 0, PARSE),
        ok("0Gi", "0", 0, 0, PARSE),
        ok("0G", "0", 0, 0, PARSE),
        ok("0Ti", "0", 0, 0, PARSE),
        ok("0T", "0", 0, 0, PARSE),
        // Quantity-less numbers.
        ok("1", "1", 1, 1000, PARSE),
        // Binary suffixes.
        ok("1Ki", "1024", 1024, 1_024_000, PARSE),
        ok("8Ki", "8192", 8192, 8_192_000, PARSE),
        ok("7Mi", "7340032", 7_340_032, 7_340_032_000, PARSE),
        ok("6Gi", "6442450944", 6_442_450_944, 6_442_450_944_000, PARSE),
        ok("5Ti", "5497558138880", 5_497_558_138_880, 5_497_558_138_880_000, PARSE),
        ok("4Pi", "4503599627370496", 4_503_599_627_370_496, 4_503_599_627_370_496_000, PARSE),
        ok("3Ei", "3458764513820540928", 3_458_764_513_820_540_928, MAX, PARSE),
        ok("10Ti", "10995116277760", 10_995_116_277_760, 10_995_116_277_760_000, PARSE),
        ok("100Ti", "109951162777600", 109_951_162_777_600, 109_951_162_777_600_000, PARSE),
        // Decimal suffixes.
        ok("5n", "0.000000005", 1, 1, PARSE),
        ok("4u", "0.000004", 1, 1, PARSE),
        ok("3m", "0.003", 1, 3, PARSE),
        ok("9", "9", 9, 9000, PARSE),
        ok("8k", "8000", 8000, 8_000_000, PARSE),
        ok("50k", "50000", 50_000, 50_000_000, PARSE),
        ok("7M", "7000000", 7_000_000, 7_000_000_000, PARSE),
        ok("6G", "6000000000", 6_000_000_000, 6_000_000_000_000, PARSE),
        ok("5T", "5000000000000", 5_000_000_000_000, 5_000_000_000_000_000, PARSE),
        ok("40T", "40000000000000", 40_000_000_000_000, 40_000_000_000_000_000, PARSE),
        ok("300T", "300000000000000", 300_000_000_000_000, 300_000_000_000_000_000, PARSE),
        ok("2P", "2000000000000000", 2_000_000_000_000_000, 2_000_000_000_000_000_000, PARSE),
        ok("1E", "1000000000000000000", 1_000_000_000_000_000_000, MAX, PARSE),
        // Decimal exponents.
        ok("1E-3", "0.001", 1, 1, PARSE),
        ok("1e3", "1000", 1000, 1_000_000, PARSE),
        ok("1E6", "1000000", 1_000_000, 1_000_000_000, PARSE),
        ok("1e9", "1000000000", 1_000_000_000, 1_000_000_000_000, PARSE),
        ok("1E12", "1000000000000", 1_000_000_000_000, 1_000_000_000_000_000, PARSE),
        ok("1e15", "1000000000000000", 1_000_000_000_000_000, 1_000_000_000_000_000_000, PARSE),
        ok("1E18", "1000000000000000000", 1_000_000_000_000_000_000, MAX, PARSE),
        // Nonstandard but still parsable.
        ok("1e14", "100000000000000", 100_000_000_000_000, 100_000_000_000_000_000, PARSE),
        ok("1e13", "10000000000000", 10_000_000_000_000, 10_000_000_000_000_000, PARSE),
        ok("100.035k", "100035", 100_035, 100_035_000, PARSE),
        // Things that look like floating point.
        ok("0.001", "0.001", 1, 1, PARSE),
        ok("0.0005k", "0.5", 1, 500, PARSE),
        ok("0.005", "0.005", 1, 5, PARSE),
        ok("0.05", "0.05", 1, 50, PARSE),
        ok("0.5", "0.5", 1, 500, PARSE),
        ok("0.00050k", "0.5", 1, 500, PARSE),
        ok("0.00500", "0.005", 1, 5, PARSE),
        ok("0.05000", "0.05", 1, 50, PARSE),
        ok("0.50000", "0.5", 1, 500, PARSE),
        ok("0.5e0", "0.5", 1, 500, PARSE),
        ok("0.5e-1", "0.05", 1, 50, PARSE),
        ok("0.5e-2", "0.005", 1, 5, PARSE),
        ok("10.035M", "10035000", 10_035_000, 10_035_000_000, PARSE),
        ok("1.2e3", "1200", 1200, 1_200_000, PARSE),
        ok("1.3E+6", "1300000", 1_300_000, 1_300_000_000, PARSE),
        ok("1.40e9", "1400000000", 1_400_000_000, 1_400_000_000_000, PARSE),
        ok("1.53E12", "1530000000000", 1_530_000_000_000, 1_530_000_000_000_000, PARSE),
        ok("1.6e15", "1600000000000000", 1_600_000_000_000_000, 1_600_000_000_000_000_000, PARSE),
        ok("1.7E18", "1700000000000000000", 1_700_000_000_000_000_000, MAX, PARSE),
        ok("9.01", "9.01", 10, 9010, PARSE),
        ok("8.1k", "8100", 8100, 8_100_000, PARSE),
        ok("7.123456M", "7123456", 7_123_456, 7_123_456_000, PARSE),
        ok("6.987654321G", "6987654321", 6_987_654_321, 6_987_654_321_000, PARSE),
        ok("5.444T", "5444000000000", 5_444_000_000_000, 5_444_000_000_000_000, PARSE),
        ok("40.1T", "40100000000000", 40_100_000_000_000, 40_100_000_000_000_000, PARSE),
        ok("300.2T", "300200000000000", 300_200_000_000_000, 300_200_000_000_000_000, PARSE),
        ok("2.5P", "2500000000000000", 2_500_000_000_000_000, 2_500_000_000_000_000_000, PARSE),
        ok("1.01E", "1010000000000000000", 1_010_000_000_000_000_000, MAX, PARSE),
        // Things that saturate/round.
        ok("3.001n", "0.000000004", 1, 1, PARSE),
        ok("1.1E-9", "0.000000002", 1, 1, PARSE),
        ok("0.0000000001", "0.000000001", 1, 1, PARSE),
        ok("0.0000000005", "0.000000001", 1, 1, PARSE),
        ok("0.00000000050", "0.000000001", 1, 1, PARSE),
        ok("0.5e-9", "0.000000001", 1, 1, PARSE),
        ok("0.9n", "0.000000001", 1, 1, PARSE),
        ok("0.00000012345", "0.000000124", 1, 1, PARSE),
        ok("0.00000012354", "0.000000124", 1, 1, PARSE),
        ok("9Ei", "9223372036854775807", MAX, MAX, PARSE),
        ok("9223372036854775807Ki", "9223372036854775807", MAX, MAX, PARSE),
        ok("12E", "12000000000000000000", MAX, MAX, PARSE),
        // Fractional binary quantities.
        ok("100.035Ki", "102435.84", 102_436, 102_435_840, PARSE),
        ok("0.5Mi", "524288", 524_288, 524_288_000, PARSE),
        ok("0.05Gi", "53687091.2", 53_687_092, 53_687_091_200, PARSE),
        ok("0.025Ti", "27487790694.4", 27_487_790_695, 27_487_790_694_400, PARSE),
        // "Things written by trolls".
        ok("0.000000000001Ki", "0.000000002", 1, 1, PARSE),
        ok(".001", "0.001", 1, 1, PARSE),
        ok(".0001k", "0.1", 1, 100, PARSE),
        ok("1.", "1", 1, 1000, PARSE),
        ok("1.G", "1000000000", 1_000_000_000, 1_000_000_000_000, PARSE),
        // The scanner's own table (all of its rows with digits parse).
        ok("1.025Ti", "1126999418470.4", 1_126_999_418_471, 1_126_999_418_470_400, PARSE_STRING),
        ok("-1.025Ti", "-1126999418470.4", -1_126_999_418_471, -1_126_999_418_470_400, PARSE_STRING),
        // Parse-then-emit.
        ok("1024Mi", "1073741824", 1_073_741_824, 1_073_741_824_000, PARSE_EMIT),
        ok("1000M", "1000000000", 1_000_000_000, 1_000_000_000_000, PARSE_EMIT),
        ok(".001Ki", "1.024", 2, 1024, PARSE_EMIT),
        ok(".000001Ki", "0.001024", 1, 2, PARSE_EMIT),
        ok(".000000001Ki", "0.000001024", 1, 1, PARSE_EMIT),
        ok(".000000000001Ki", "0.000000002", 1, 1, PARSE_EMIT),
        // RoundUp(0) of ±9.01 is ±10: rounding is away from zero.
        ok("-9.01", "-9.01", -10, -9010, ROUND_UP),
        // Round trips through Value() / MilliValue() / ScaledValue().
        ok("1k", "1000", 1000, 1_000_000, NEW_SET),
        ok("1234k", "1234000", 1_234_000, 1_234_000_000, NEW_SET),
        ok("1e6", "1000000", 1_000_000, 1_000_000_000, NEW_SET),
        ok("1Mi", "1048576", 1_048_576, 1_048_576_000, NEW_SET),
        ok("1m", "0.001", 1, 1, MILLI_NEW_SET),
        ok("1234", "1234", 1234, 1_234_000, MILLI_NEW_SET),
        ok("1024m", "1.024", 2, 1024, MILLI_NEW_SET),
        ok("1048576m", "1048.576", 1049, 1_048_576, MILLI_NEW_SET),
        ok("1n", "0.000000001", 1, 1, NEW_SCALED_SET),
        ok("1u", "0.000001", 1, 1, NEW_SCALED_SET),
        // After JSON trimming.
        ok("-1", "-1", -1, -1000, JSON_WHITESPACE),
        ok("10", "10", 10, 10_000, JSON_WHITESPACE),
        // Operands of comparisons and string round trips.
        ok("100m", "0.1", 1, 100, CMP),
        ok("50m", "0.05", 1, 50, CMP),
        ok("10000T", "10000000000000000", 10_000_000_000_000_000, MAX, CMP),
        ok("100Gi", "107374182400", 107_374_182_400, 107_374_182_400_000, CMP),
        ok("1Gi", "1073741824", 1_073_741_824, 1_073_741_824_000, ADD_ZERO),
        ok("1G", "1000000000", 1_000_000_000, 1_000_000_000_000, STRING),
        ok("300Mi", "314572800", 314_572_800, 314_572_800_000, STRING),
        ok("1080m", "1.08", 2, 1080, STRING),
        ok("80e-3", "0.08", 1, 80, STRING),
        ok("1080n", "0.00000108", 1, 1, STRING),
        ok("00", "0", 0, 0, STRING),
        ok(".001e12", "1000000000", 1_000_000_000, 1_000_000_000_000, STRING),
        ok("0.001e0", "0.001", 1, 1, STRING),
        ok("1000e-12", "0.000000001", 1, 1, STRING),
        // Values around the int64 bounds.
        ok("999999999999999999", "999999999999999999", 999_999_999_999_999_999, MAX, PARSE_BOUNDS),
        ok("-999999999999999999.1", "-999999999999999999.1", -1_000_000_000_000_000_000, MIN, PARSE_BOUNDS),
        ok("9999999999999999999000m", "9999999999999999999", MAX, MAX, PARSE_BOUNDS),
        ok("-1.0E", "-1000000000000000000", -1_000_000_000_000_000_000, MIN, PARSE_BOUNDS),
        ok("1.0000000000000000001E", "1000000000000000000.1", 1_000_000_000_000_000_001, MAX, PARSE_BOUNDS),
        ok("10E", "10000000000000000000", MAX, MAX, PARSE_BOUNDS),
        ok("-10000000000000000000000m", "-10000000000000000000", MIN, MIN, PARSE_BOUNDS),
        ok("9223372036854775806.1", "9223372036854775806.1", MAX, MAX, PARSE_BOUNDS),
        ok("9223372036854775807", "9223372036854775807", MAX, MAX, PARSE_BOUNDS),
        ok("9223372036854775807.0", "9223372036854775807", MAX, MAX, PARSE_BOUNDS),
        ok("9223372036854775808", "9223372036854775808", MAX, MAX, PARSE_BOUNDS),
        ok("-9223372036854775807", "-9223372036854775807", -MAX, MIN, PARSE_BOUNDS),
        ok("-9223372036854775807.1", "-9223372036854775807.1", MIN, MIN, PARSE_BOUNDS),
        ok("-9223372036854775808", "-9223372036854775808", MIN, MIN, PARSE_BOUNDS),
        ok("-9223372036854775808000m", "-9223372036854775808", MIN, MIN, PARSE_BOUNDS),
        ok("-9223372036854775809", "-9223372036854775809", MIN, MIN, PARSE_BOUNDS),
        // Value() / MilliValue() of the documentation example.
        ok("5Gi", "5368709120", 5_368_709_120, 5_368_709_120_000, EXAMPLE),
        ok("5G", "5000000000", 5_000_000_000, 5_000_000_000_000, EXAMPLE),
        ok("5300m", "5.3", 6, 5300, EXAMPLE),
        ok("5.4", "5.4", 6, 5400, EXAMPLE),
        // The grammar, beyond the Go tables' exact spellings.
        ok("200Mi", "209715200", 209_715_200, 209_715_200_000, GRAMMAR),
        ok("1.5Gi", "1610612736", 1_610_612_736, 1_610_612_736_000, GRAMMAR),
        ok(".5", "0.5", 1, 500, GRAMMAR),
        ok("5.", "5", 5, 5000, GRAMMAR),
        ok("+1", "1", 1, 1000, GRAMMAR),
        ok("-0", "0", 0, 0, GRAMMAR),
        ok("-100m", "-0.1", -1, -100, GRAMMAR),
        ok("-1n", "-0.000000001", -1, -1, GRAMMAR),
        ok("-9Ei", "-9223372036854775807", -MAX, MIN, GRAMMAR),
        ok("1.e5", "100000", 100_000, 100_000_000, GRAMMAR),
        ok("1e-0", "1", 1, 1000, GRAMMAR),
        ok("1e+05", "100000", 100_000, 100_000_000, GRAMMAR),
        ok("0001.5000", "1.5", 2, 1500, GRAMMAR),
        ok("1e00000000000000000000002", "100", 100, 100_000, GRAMMAR),
        // Huge exponents cost nothing and saturate.
        ok("1e2147483647", "", MAX, MAX, HOSTSET_LIMIT),
        ok("-1e2147483647", "", MIN, MIN, HOSTSET_LIMIT),
        ok("1e-2147483647", "0.000000001", 1, 1, HOSTSET_LIMIT),
        ok("0e2147483647", "0", 0, 0, HOSTSET_LIMIT),
    ]
}

struct Invalid {
    input: &'static str,
    error: QuantityError,
    source: &'static str,
}

const fn bad(input: &'static str, error: QuantityError, source: &'static str) -> Invalid {
    Invalid {
        input,
        error,
        source,
    }
}

#[rustfmt::skip]
fn invalid_cases() -> Vec<Invalid> {
    use QuantityError::{Format, Numeric, Suffix};
    vec![
        bad("", Format, PARSE),
        bad("1.1.M", Format, PARSE),
        bad("1+1.0M", Format, PARSE),
        bad("0.1mi", Suffix, PARSE),
        bad("0.1am", Format, PARSE),
        bad("aoeu", Format, PARSE),
        bad(".5i", Suffix, PARSE),
        bad("1i", Suffix, PARSE),
        bad("-3.01i", Suffix, PARSE),
        bad("-3.01e-", Suffix, PARSE),
        bad(" 1", Format, PARSE),
        bad("1 ", Format, PARSE),
        bad("Non-Numeric", Format, NON_NUMERIC),
        bad("1.5.5", Format, GRAMMAR),
        bad("1 Mi", Format, GRAMMAR),
        bad("1mi", Suffix, GRAMMAR),
        bad("1KB", Format, GRAMMAR),
        bad("1K", Suffix, GRAMMAR),
        bad("1e", Suffix, GRAMMAR),
        bad("1ki", Suffix, GRAMMAR),
        bad("10m500", Suffix, GRAMMAR),
        bad("1Ki5", Suffix, GRAMMAR),
        bad("1Ee5", Suffix, GRAMMAR),
        bad("1e+", Suffix, GRAMMAR),
        bad("1e+-5", Format, GRAMMAR),
        bad("1e1.5", Format, GRAMMAR),
        bad("--1", Suffix, GRAMMAR),
        bad("1-5", Suffix, GRAMMAR),
        bad("0x10", Format, GRAMMAR),
        bad("1_000", Format, GRAMMAR),
        bad("1,5", Format, GRAMMAR),
        bad("\u{ff11}", Format, GRAMMAR),
        bad("1\u{00b5}", Format, GRAMMAR),
        bad("1\n", Format, GRAMMAR),
        bad("Mi", Numeric, HOSTSET_DIGITS),
        bad("m", Numeric, HOSTSET_DIGITS),
        bad("e5", Numeric, HOSTSET_DIGITS),
        bad(".", Numeric, HOSTSET_DIGITS),
        bad("-.", Numeric, HOSTSET_DIGITS),
        bad("+", Numeric, HOSTSET_DIGITS),
        bad("-", Numeric, HOSTSET_DIGITS),
        bad(".Ki", Numeric, HOSTSET_DIGITS),
        bad("1e4294967297", Suffix, HOSTSET_EXP),
        bad("1e2147483648", Suffix, HOSTSET_EXP),
        bad("1e-2147483648", Suffix, HOSTSET_EXP),
        bad("1e999999999999", Suffix, HOSTSET_EXP),
        bad("1e9223372036854775808", Suffix, HOSTSET_EXP),
        bad("1e99999999999999999999999999999999999999", Suffix, HOSTSET_EXP),
    ]
}

fn parse(s: &str) -> Quantity {
    s.parse()
        .unwrap_or_else(|e| panic!("{s:?} should parse: {e}"))
}

#[test]
fn valid_quantities() {
    let mut failures = Vec::new();
    for case in valid_cases() {
        let q = match case.input.parse::<Quantity>() {
            Ok(q) => q,
            Err(e) => {
                failures.push(format!("{:?} ({}): error {e}", case.input, case.source));
                continue;
            }
        };
        let got = (q.value(), q.milli_value());
        if got != (case.value, case.milli) {
            failures.push(format!(
                "{:?} ({}): value/milli {got:?}, want {:?}",
                case.input,
                case.source,
                (case.value, case.milli)
            ));
        }
        if !case.exact.is_empty() {
            let exact = parse(case.exact);
            if q.cmp_exact(&exact) != Ordering::Equal {
                failures.push(format!(
                    "{:?} ({}): not equal to {}",
                    case.input, case.source, case.exact
                ));
            }
            if q.is_zero() != exact.is_zero() || q.is_negative() != exact.is_negative() {
                failures.push(format!("{:?} ({}): sign", case.input, case.source));
            }
        }
        if q.to_string() != case.input {
            failures.push(format!("{:?}: displays as {q}", case.input));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Go's `TestQuantityParse` reruns its table with a `-` and a `+` prefix.
#[test]
fn negated_and_plus_variants() {
    let mut failures = Vec::new();
    for case in valid_cases() {
        if case.input.starts_with(['-', '+']) {
            continue;
        }
        let q = parse(case.input);
        let plus = parse(&format!("+{}", case.input));
        let minus = parse(&format!("-{}", case.input));
        if plus.cmp_exact(&q) != Ordering::Equal || plus.value() != q.value() {
            failures.push(format!("+{} ({})", case.input, case.source));
        }
        let zero = parse("0");
        let minus_ok = if q.is_zero() {
            minus.is_zero() && !minus.is_negative() && minus.value() == 0
        } else {
            minus.is_negative()
                && minus.cmp_exact(&zero) == Ordering::Less
                && (case.exact.is_empty()
                    || minus.cmp_exact(&parse(&format!("-{}", case.exact))) == Ordering::Equal)
                // Away from zero is symmetric; only saturation is not.
                && (case.value == MAX || minus.value() == -case.value)
                && (case.milli == MAX || minus.milli_value() == -case.milli)
        };
        if !minus_ok {
            failures.push(format!("-{} ({})", case.input, case.source));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn invalid_quantities() {
    let mut failures = Vec::new();
    for case in invalid_cases() {
        match case.input.parse::<Quantity>() {
            Ok(q) => failures.push(format!(
                "{:?} ({}): parsed as {q:?}",
                case.input, case.source
            )),
            Err(e) if e != case.error => failures.push(format!(
                "{:?} ({}): error {e:?}, want {:?}",
                case.input, case.source, case.error
            )),
            Err(_) => {}
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn error_messages_match_kubernetes() {
    assert_eq!(
        QuantityError::Format.to_string(),
        "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"
    );
    assert_eq!(
        QuantityError::Numeric.to_string(),
        "unable to parse numeric part of quantity"
    );
    assert_eq!(
        QuantityError::Suffix.to_string(),
        "unable to parse quantity's suffix"
    );
}

#[rustfmt::skip]
#[test]
fn comparisons() {
    use Ordering::{Equal, Greater, Less};
    let table: &[(&str, &str, Ordering, &str)] = &[
        ("0", "0", Equal, CMP),
        ("100m", "50m", Greater, CMP),
        ("50m", "100m", Less, CMP),
        ("10000T", "100Gi", Greater, CMP),
        ("1G", "1000M", Equal, STRING),
        ("1G", "0.001T", Equal, STRING),
        ("1Gi", "1024Mi", Equal, STRING),
        ("300Mi", "307200Ki", Equal, STRING),
        ("1m", "1000u", Equal, STRING),
        ("1080m", "1080000000n", Equal, STRING),
        ("1e9", ".001e12", Equal, STRING),
        ("0", "00", Equal, STRING),
        ("0", "-0", Equal, PARSE),
        ("0Ki", "0e-5", Equal, PARSE),
        ("1Ki", "1k", Greater, PARSE),
        ("-1Ki", "-1k", Less, PARSE),
        ("-1", "1n", Less, PARSE),
        ("9Ei", "9223372036854775807", Equal, PARSE),
        ("10Ei", "9Ei", Equal, PARSE),
        ("12E", "9Ei", Greater, PARSE),
        ("0.0000000001", "0.0000000009", Equal, PARSE),
        ("1k", "1000", Equal, GRAMMAR),
        ("1e2147483647", "2e2147483647", Less, HOSTSET_LIMIT),
        ("-1e2147483647", "-2e2147483647", Greater, HOSTSET_LIMIT),
        ("1e2147483647", "1e2147483646", Greater, HOSTSET_LIMIT),
    ];
    for &(a, b, want, source) in table {
        let (qa, qb) = (parse(a), parse(b));
        assert_eq!(qa.cmp_exact(&qb), want, "{a} vs {b} ({source})");
        assert_eq!(qb.cmp_exact(&qa), want.reverse(), "{b} vs {a} ({source})");
    }
}

#[test]
fn equality_is_structural() {
    assert_eq!(parse("1k"), parse("1k"));
    assert_ne!(parse("1k"), parse("1000"));
    assert_eq!(parse("200Mi").to_string(), "200Mi");
}

#[test]
fn huge_inputs_stay_cheap() {
    let long = format!("0.{}1Ei", "0".repeat(100_000));
    let q = parse(&long);
    assert_eq!((q.value(), q.milli_value()), (1, 1));
    let long = format!("{}Ei", "9".repeat(100_000));
    assert_eq!(
        parse(&long).cmp_exact(&parse("9223372036854775807")),
        Ordering::Equal
    );
    // 100 000 nines × 10^-99990 is 9999999999.99…: ten integer digits.
    let long = format!("{}e-99990", "9".repeat(100_000));
    assert_eq!(parse(&long).value(), 10_000_000_000);
    let long = format!("{}e-99980", "9".repeat(100_000));
    assert_eq!(parse(&long).value(), MAX);
    assert_eq!(parse(&format!("-{long}")).value(), MIN);
}

// ---------------------------------------------------------------------------
// Properties.

/// The suffixes and their multipliers, written independently of the crate:
/// (suffix, numerator, denominator) with value = mantissa × num / den.
const SUFFIXES: &[(&str, i128, i128)] = &[
    ("n", 1, 1_000_000_000),
    ("u", 1, 1_000_000),
    ("m", 1, 1_000),
    ("", 1, 1),
    ("k", 1_000, 1),
    ("M", 1_000_000, 1),
    ("G", 1_000_000_000, 1),
    ("T", 1_000_000_000_000, 1),
    ("P", 1_000_000_000_000_000, 1),
    ("E", 1_000_000_000_000_000_000, 1),
    ("Ki", 1 << 10, 1),
    ("Mi", 1 << 20, 1),
    ("Gi", 1 << 30, 1),
    ("Ti", 1 << 40, 1),
    ("Pi", 1 << 50, 1),
    ("Ei", 1 << 60, 1),
];

/// A random suffix: an SI suffix from the table, or `e`/`E` with an exponent
/// in -20..=17 (so the model below stays inside i128). Returns (text, num, den, binary).
fn suffix_strategy() -> impl Strategy<Value = (String, i128, i128, bool)> {
    prop_oneof![
        (0..SUFFIXES.len()).prop_map(|i| {
            let (s, n, d) = SUFFIXES[i];
            (s.to_string(), n, d, s.ends_with('i'))
        }),
        (prop::bool::ANY, prop::bool::ANY, -20i32..=17).prop_map(|(upper, plus, e)| {
            let letter = if upper { 'E' } else { 'e' };
            let sign = if plus && e >= 0 { "+" } else { "" };
            let p = 10i128.pow(e.unsigned_abs());
            let (n, d) = if e >= 0 { (p, 1) } else { (1, p) };
            (format!("{letter}{sign}{e}"), n, d, false)
        }),
    ]
}

/// ceil(|n/d|) with the sign of n/d (away from zero), saturated to i64.
fn expected_rounded(n: i128, d: i128) -> i64 {
    let q = n.abs() / d;
    let q = if n.abs() % d != 0 { q + 1 } else { q };
    let q = if n < 0 { -q } else { q };
    q.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_strings_never_panic(s in any::<String>()) {
        if let Ok(q) = s.parse::<Quantity>() {
            let _ = (q.value(), q.milli_value(), q.is_zero(), q.is_negative());
            prop_assert_eq!(q.cmp_exact(&q), Ordering::Equal);
            prop_assert_eq!(q.to_string(), s);
        }
    }

    #[test]
    fn quantity_shaped_strings_never_panic(
        s in "[+-]?[0-9]{0,25}[.]?[0-9]{0,25}[eEinumkKMGTP]{0,3}[+-]?[0-9]{0,22}"
    ) {
        if let Ok(q) = s.parse::<Quantity>() {
            let v = q.value();
            let m = q.milli_value();
            prop_assert_eq!(q.cmp_exact(&q), Ordering::Equal);
            prop_assert!(!(q.is_zero() && q.is_negative()));
            // Rounding away from zero: signs agree and |milli| >= |value|
            // unless saturated.
            prop_assert_eq!(v.signum(), m.signum());
            prop_assert!(m.unsigned_abs() >= v.unsigned_abs()
                || m == i64::MAX || m == i64::MIN);
            let zero: Quantity = "0".parse().unwrap();
            prop_assert_eq!(q.cmp_exact(&zero), v.cmp(&0));
        }
    }

    #[test]
    fn value_matches_rational_model(
        negative in prop::bool::ANY,
        int_part in 0u64..10_000_000_000,
        frac in "[0-9]{0,6}",
        (suffix, num, den, binary) in suffix_strategy(),
    ) {
        let sign = if negative { "-" } else { "" };
        let text = if frac.is_empty() {
            format!("{sign}{int_part}{suffix}")
        } else {
            format!("{sign}{int_part}.{frac}{suffix}")
        };
        let q: Quantity = text.parse().unwrap();

        // mantissa = int_part.frac as a fraction m / 10^len(frac).
        let scale = 10i128.pow(frac.len() as u32);
        let frac_value: i128 = if frac.is_empty() { 0 } else { frac.parse().unwrap() };
        let mut n = (i128::from(int_part) * scale + frac_value) * num;
        let mut d = scale * den;
        // Kubernetes caps binary-SI magnitudes at 2^63-1.
        if binary && n > i128::from(i64::MAX) * d {
            n = i128::from(i64::MAX);
            d = 1;
        }
        if negative {
            n = -n;
        }

        prop_assert_eq!(q.value(), expected_rounded(n, d), "value of {}", text);
        prop_assert_eq!(q.milli_value(), expected_rounded(n * 1000, d), "milli of {}", text);
        prop_assert_eq!(q.is_zero(), n == 0);
        prop_assert_eq!(q.is_negative(), n < 0);
    }

    #[test]
    fn cmp_matches_rational_model(
        a in (0u64..1_000_000, 0..SUFFIXES.len(), prop::bool::ANY),
        b in (0u64..1_000_000, 0..SUFFIXES.len(), prop::bool::ANY),
    ) {
        let make = |(m, i, neg): (u64, usize, bool)| {
            let (s, n, d) = SUFFIXES[i];
            let sign = if neg { "-" } else { "" };
            let q: Quantity = format!("{sign}{m}{s}").parse().unwrap();
            let mut n = i128::from(m) * n;
            // Kubernetes caps binary-SI magnitudes at 2^63-1.
            if s.ends_with('i') {
                n = n.min(i128::from(i64::MAX));
            }
            (q, if neg { -n } else { n }, d)
        };
        let (qa, na, da) = make(a);
        let (qb, nb, db) = make(b);
        // Integer mantissas: none of these needs rounding to 1n.
        prop_assert_eq!(qa.cmp_exact(&qb), (na * db).cmp(&(nb * da)));
    }
}
