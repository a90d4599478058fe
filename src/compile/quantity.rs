//! Kubernetes resource quantities (`500m`, `2`, `1Gi`, `1e3`), parsed exactly as the API server
//! parses them, so that ork refuses what would make the API server refuse a task's Job.
//!
//! The grammar (`k8s.io/apimachinery/pkg/api/resource`): an optional sign, digits with an
//! optional fraction (`1`, `1.5`, `1.`, `.5`), then an optional suffix: binary `Ki Mi Gi Ti Pi
//! Ei`, decimal `n u m k M G T P E`, or an exponent `e`/`E` followed by a signed integer. The API
//! server is lenient in corners that are reproduced here on purpose (`.`, `-`, `m` and `Ki` are
//! all zero; `Pi` alone is not valid). Values are kept exactly (any number of digits), rounded up
//! to the nano as the API server rounds them, and binary values are capped at 2^63-1 as it caps
//! them, so that comparisons agree with its own: `1` = `1000m`, `1Gi` = `1073741824`.

use std::cmp::Ordering;

/// The exact value of a quantity: `digits` × 10^`exponent`, negated when `negative`. Normalized:
/// no leading or trailing zero digit; zero has no digits and is not negative.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Quantity {
    negative: bool,
    /// Decimal digits, most significant first, each 0..=9.
    digits: Vec<u8>,
    exponent: i64,
}

/// How a suffix scales the number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Suffix {
    /// × 10^n, from a decimal SI suffix or an exponent.
    Decimal(i32),
    /// × 2^n, from a binary SI suffix.
    Binary(u32),
}

/// The pieces of a quantity's text, as the API server's scanner splits it.
struct Parts<'a> {
    negative: bool,
    /// The sign, digits and fraction as written (`-01.50`), without the suffix.
    number: &'a str,
    /// Integer digits without leading zeros (`"0"` when there are none).
    whole: &'a str,
    /// Fraction digits as written.
    fraction: &'a str,
    suffix: &'a str,
}

/// Digits of a number at most this long fit the API server's 64-bit fast path.
const MAX_FAST_DIGITS: i64 = 18;

/// Largest value a binary-suffixed quantity keeps (the API server caps it there).
const MAX_BINARY: u64 = i64::MAX as u64;

impl Quantity {
    /// Parses a quantity as the API server reads one from JSON: surrounding white space is
    /// ignored. `None` when the API server would refuse it.
    pub(crate) fn parse(text: &str) -> Option<Quantity> {
        Self::parse_exact(text.trim())
    }

    /// Parses `text` as it is (the API server's `ParseQuantity`).
    pub(crate) fn parse_exact(text: &str) -> Option<Quantity> {
        if text.is_empty() {
            return None;
        }
        let parts = split(text)?;
        let suffix = interpret(parts.suffix)?;
        if let Some(value) = fast_path(&parts, suffix) {
            return Some(value);
        }
        slow_path(&parts, suffix)
    }

    pub(crate) fn zero() -> Quantity {
        Quantity {
            negative: false,
            digits: Vec::new(),
            exponent: 0,
        }
    }

    pub(crate) fn is_negative(&self) -> bool {
        self.negative
    }

    pub(crate) fn is_positive(&self) -> bool {
        !self.negative && !self.digits.is_empty()
    }

    /// Whether the value is a whole number.
    pub(crate) fn is_integer(&self) -> bool {
        self.digits.is_empty() || self.exponent >= 0
    }

    /// The value rounded up to a whole number (as the API server's `Value()`), modulo `m`
    /// (`m` > 0); for a non-negative value.
    pub(crate) fn ceil_mod(&self, m: u64) -> u64 {
        let m = u128::from(m);
        let len = self.digits.len() as i64;
        // Digits left of the decimal point, and whether any digit right of it is non-zero.
        let whole = (len + self.exponent.min(0)).max(0) as usize;
        let fraction = whole < self.digits.len();
        let mut rest = self.digits[..whole]
            .iter()
            .fold(0u128, |r, &d| (r * 10 + u128::from(d)) % m);
        if self.exponent > 0 {
            rest = rest * pow_mod(10, self.exponent as u64, m) % m;
        }
        if fraction {
            rest = (rest + 1) % m;
        }
        rest as u64
    }

    /// The value if it is a whole number that fits in `u64`.
    pub(crate) fn to_u64(&self) -> Option<u64> {
        if !self.is_integer() || self.negative {
            return None;
        }
        let mut value = 0u64;
        for &d in &self.digits {
            value = value.checked_mul(10)?.checked_add(u64::from(d))?;
        }
        for _ in 0..self.exponent {
            value = value.checked_mul(10)?;
        }
        Some(value)
    }

    fn new(negative: bool, mut digits: Vec<u8>, mut exponent: i64) -> Quantity {
        let leading = digits.iter().take_while(|&&d| d == 0).count();
        digits.drain(..leading);
        while digits.last() == Some(&0) {
            digits.pop();
            exponent += 1;
        }
        if digits.is_empty() {
            return Quantity::zero();
        }
        Quantity {
            negative,
            digits,
            exponent,
        }
    }

    /// Rounds the magnitude up to a multiple of 10^-9, as the API server does.
    fn round_up_to_nano(self) -> Quantity {
        const NANO: i64 = -9;
        if self.exponent >= NANO || self.digits.is_empty() {
            return self;
        }
        let cut = (NANO - self.exponent) as u64;
        let keep = (self.digits.len() as u64).saturating_sub(cut) as usize;
        let mut digits = self.digits;
        // Normalized, so the cut digits are never all zero: round up.
        digits.truncate(keep);
        add_one(&mut digits);
        Quantity::new(self.negative, digits, NANO)
    }

    /// The magnitude, capped at `max`.
    fn capped(self, max: u64) -> Quantity {
        let cap = Quantity::new(false, decimal_digits(max), 0);
        if self.magnitude_cmp(&cap) == Ordering::Greater {
            Quantity {
                negative: self.negative,
                ..cap
            }
        } else {
            self
        }
    }

    /// Compares absolute values.
    fn magnitude_cmp(&self, other: &Quantity) -> Ordering {
        match (self.digits.is_empty(), other.digits.is_empty()) {
            (true, true) => return Ordering::Equal,
            (true, false) => return Ordering::Less,
            (false, true) => return Ordering::Greater,
            _ => {}
        }
        // Position of the leading digit decides, then the digits themselves.
        let top = |q: &Quantity| q.digits.len() as i64 + q.exponent;
        top(self)
            .cmp(&top(other))
            .then_with(|| self.digits.cmp(&other.digits))
    }
}

impl Ord for Quantity {
    fn cmp(&self, other: &Self) -> Ordering {
        match (self.negative, other.negative) {
            (false, true) => Ordering::Greater,
            (true, false) => Ordering::Less,
            (false, false) => self.magnitude_cmp(other),
            (true, true) => other.magnitude_cmp(self),
        }
    }
}

impl PartialOrd for Quantity {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Splits `text` as the API server's scanner does; `None` on text it refuses.
fn split(text: &str) -> Option<Parts<'_>> {
    let b = text.as_bytes();
    let end = b.len();
    let digit_run =
        |from: usize| from + b[from..].iter().take_while(|c| c.is_ascii_digit()).count();
    let mut pos = 0;
    let negative = b[0] == b'-';
    if matches!(b[0], b'-' | b'+') {
        pos = 1;
    }
    pos += b[pos..].iter().take_while(|&&c| c == b'0').count();
    if pos == end {
        // Only a sign and zeros.
        return Some(Parts {
            negative,
            number: "0",
            whole: "0",
            fraction: "",
            suffix: "",
        });
    }
    let whole_start = pos;
    pos = digit_run(pos);
    let whole = if pos == whole_start {
        "0"
    } else {
        &text[whole_start..pos]
    };
    let mut fraction = "";
    if pos < end && b[pos] == b'.' {
        let start = pos + 1;
        pos = digit_run(start);
        fraction = &text[start..pos];
    }
    let number = &text[..pos];
    let suffix_start = pos;
    pos += b[pos..]
        .iter()
        .take_while(|c| b"eEinumkKMGTP".contains(c))
        .count();
    if pos < end && matches!(b[pos], b'-' | b'+') {
        pos += 1;
    }
    pos = digit_run(pos);
    (pos == end).then_some(Parts {
        negative,
        number,
        whole,
        fraction,
        suffix: &text[suffix_start..],
    })
}

/// What a suffix means; `None` when the API server does not know it.
fn interpret(suffix: &str) -> Option<Suffix> {
    let decimal = match suffix {
        "n" => -9,
        "u" => -6,
        "m" => -3,
        "" => 0,
        "k" => 3,
        "M" => 6,
        "G" => 9,
        "T" => 12,
        "P" => 15,
        "E" => 18,
        "Ki" => return Some(Suffix::Binary(10)),
        "Mi" => return Some(Suffix::Binary(20)),
        "Gi" => return Some(Suffix::Binary(30)),
        "Ti" => return Some(Suffix::Binary(40)),
        "Pi" => return Some(Suffix::Binary(50)),
        "Ei" => return Some(Suffix::Binary(60)),
        _ => {
            let exponent = suffix.strip_prefix(['e', 'E'])?;
            // A 64-bit integer, then truncated to 32 bits as the API server does.
            return exponent
                .parse::<i64>()
                .ok()
                .map(|e| Suffix::Decimal(e as i32));
        }
    };
    Some(Suffix::Decimal(decimal))
}

/// The API server's 64-bit path, taken for short numbers: `None` where it falls back to
/// arbitrary precision.
fn fast_path(parts: &Parts<'_>, suffix: Suffix) -> Option<Quantity> {
    let digits = (parts.whole.len() + parts.fraction.len()) as i64;
    let (mut scale, shift, precision) = match suffix {
        Suffix::Decimal(exponent) => (exponent, 0, MAX_FAST_DIGITS - digits),
        Suffix::Binary(exponent) if parts.fraction.is_empty() => {
            // 15 - digits - 0.3 × exponent - 1, as the API server estimates it.
            let precision = 15 - parts.whole.len() as i64 - i64::from(exponent * 3 / 10) - 1;
            (0, exponent, precision)
        }
        Suffix::Binary(_) => return None,
    };
    if precision < 0 {
        return None;
    }
    scale = scale.wrapping_sub(parts.fraction.len() as i32);
    if scale < -9 {
        return None;
    }
    let mut value: i64 = 0;
    for c in parts.whole.bytes().chain(parts.fraction.bytes()) {
        value = value * 10 + i64::from(c - b'0');
    }
    let value = value.checked_mul(1i64.checked_shl(shift)?)?;
    Some(Quantity::new(
        parts.negative,
        decimal_digits(value.unsigned_abs()),
        i64::from(scale),
    ))
}

/// The API server's arbitrary-precision path: the number must hold a digit.
fn slow_path(parts: &Parts<'_>, suffix: Suffix) -> Option<Quantity> {
    let digits: Vec<u8> = parts
        .number
        .bytes()
        .filter(u8::is_ascii_digit)
        .map(|c| c - b'0')
        .collect();
    if digits.is_empty() {
        return None;
    }
    // The number's scale (digits after the point) is 32-bit in the API server, and so is the
    // exponent it adds: both wrap there, and so they do here.
    let scale = parts.fraction.len() as i32;
    let value = match suffix {
        Suffix::Decimal(exponent) => {
            let scale = scale.wrapping_add(exponent.wrapping_neg());
            Quantity::new(parts.negative, digits, -i64::from(scale))
        }
        Suffix::Binary(exponent) => {
            let mut digits = digits;
            times_power_of_two(&mut digits, exponent);
            Quantity::new(parts.negative, digits, -i64::from(scale))
        }
    };
    let value = value.round_up_to_nano();
    Some(match suffix {
        Suffix::Binary(_) => value.capped(MAX_BINARY),
        Suffix::Decimal(_) => value,
    })
}

fn decimal_digits(mut value: u64) -> Vec<u8> {
    let mut digits = Vec::new();
    while value > 0 {
        digits.push((value % 10) as u8);
        value /= 10;
    }
    digits.reverse();
    digits
}

/// `digits` × 2^`exponent`, in place.
fn times_power_of_two(digits: &mut Vec<u8>, mut exponent: u32) {
    while exponent > 0 {
        let step = exponent.min(32);
        exponent -= step;
        let factor = 1u64 << step;
        let mut carry = 0u64;
        for d in digits.iter_mut().rev() {
            let v = u64::from(*d) * factor + carry;
            *d = (v % 10) as u8;
            carry = v / 10;
        }
        let high = decimal_digits(carry);
        digits.splice(0..0, high);
    }
}

/// Adds one to the last digit of `digits`, carrying.
fn add_one(digits: &mut Vec<u8>) {
    for d in digits.iter_mut().rev() {
        if *d < 9 {
            *d += 1;
            return;
        }
        *d = 0;
    }
    digits.insert(0, 1);
}

fn pow_mod(base: u128, mut exponent: u64, m: u128) -> u128 {
    let mut result = 1 % m;
    let mut base = base % m;
    while exponent > 0 {
        if exponent & 1 == 1 {
            result = result * base % m;
        }
        base = base * base % m;
        exponent >>= 1;
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(text: &str) -> Quantity {
        Quantity::parse(text).unwrap_or_else(|| panic!("{text:?} should parse"))
    }

    #[test]
    fn valid_quantities() {
        let valid = [
            "0",
            "1",
            "+1",
            "-1",
            "500m",
            "0.5",
            "1.5",
            "1.",
            ".5",
            "2Ki",
            "1Mi",
            "1Gi",
            "1.5Gi",
            "1Ti",
            "1Pi",
            "1Ei",
            "1n",
            "1u",
            "1k",
            "1M",
            "1G",
            "1T",
            "1P",
            "1E",
            "1e3",
            "1E3",
            "1e-3",
            "1e+3",
            "1.5e3",
            "100e-12",
            " 2 ",
            "007",
            "-0",
            "1.G",
            // Corners the API server accepts.
            ".",
            "-",
            "+",
            "m",
            "Ki",
            "Ti",
            "-.Ki",
            "e5",
            "000",
            // Exponents wrap at 32 bits: this is 1.
            "1e4294967296",
            // Too long for 64 bits: arbitrary precision.
            "123456789012345678901234567890",
            "9999999999999999999Ei",
            "0.0000000001",
        ];
        for text in valid {
            assert!(Quantity::parse(text).is_some(), "{text:?} is valid");
        }
    }

    #[test]
    fn invalid_quantities() {
        let invalid = [
            "",
            " ",
            "banana",
            "1.5.5",
            "1Zi",
            "1ki",
            "1K",
            "1e",
            "1e+",
            "1e3m",
            "1ee3",
            "1mi",
            "1 Gi",
            "--1",
            "1-",
            "0x10",
            "1,5",
            "１",
            "1e99999999999999999999",
            "NaN",
            "inf",
            "1_000",
            // No digit where the API server needs one.
            "Pi",
            "Ei",
            "e-10",
        ];
        for text in invalid {
            assert_eq!(Quantity::parse(text), None, "{text:?}");
        }
        assert_eq!(Quantity::parse_exact(" 1"), None, "names are not trimmed");
        assert_eq!(
            Quantity::parse(" 1Gi\n"),
            Some(q("1Gi")),
            "JSON values are trimmed"
        );
    }

    #[test]
    fn values_compare_exactly() {
        let equal = [
            ("1", "1000m"),
            ("1Gi", "1073741824"),
            ("1Ki", "1024"),
            ("1.5Ki", "1536"),
            ("1e3", "1k"),
            ("0.5", "500m"),
            ("1E", "1e18"),
            ("-0", "0"),
            (".", "0"),
            ("m", "0"),
            ("1e4294967296", "1"),
            ("0.0000000001", "1n"),
            ("-0.0000000001", "-1n"),
            ("1.0000000001", "1000000001n"),
            ("9999999999999999999Ei", "9223372036854775807"),
            ("100000000000000000000", "1e20"),
            ("0.1Ki", "102.4"),
        ];
        for (a, b) in equal {
            assert_eq!(q(a).cmp(&q(b)), Ordering::Equal, "{a} = {b}");
        }
        let ascending = [
            ("-2", "-1"),
            ("-1", "0"),
            ("999m", "1"),
            ("1", "1001m"),
            ("1G", "1Gi"),
            ("1n", "1u"),
            ("99", "100"),
            ("1e20", "1e21"),
            ("1.5", "2"),
        ];
        for (a, b) in ascending {
            assert_eq!(q(a).cmp(&q(b)), Ordering::Less, "{a} < {b}");
            assert_eq!(q(b).cmp(&q(a)), Ordering::Greater, "{b} > {a}");
        }
    }

    #[test]
    fn signs_and_whole_numbers() {
        assert!(q("-1").is_negative());
        assert!(q("-1n").is_negative());
        assert!(!q("-0").is_negative());
        assert!(q("1n").is_positive() && !q("0").is_positive());
        for whole in ["1", "1k", "1Ki", "1e3", "1.0", "1000m", "0"] {
            assert!(q(whole).is_integer(), "{whole}");
        }
        for fraction in ["1.5", "500m", "1n", "1e-1"] {
            assert!(!q(fraction).is_integer(), "{fraction}");
        }
        assert_eq!(q("2Mi").to_u64(), Some(2 << 20));
        assert_eq!(q("1e30").to_u64(), None);
        assert_eq!(q("4Mi").ceil_mod(2 << 20), 0);
        assert_eq!(q("3Mi").ceil_mod(2 << 20), 1 << 20);
        assert_eq!(
            q("1e30").ceil_mod(7),
            (1..=30).fold(1u64, |r, _| r * 10 % 7)
        );
        assert_eq!(q("1.5").ceil_mod(10), 2);
    }

    #[test]
    fn long_numbers_stay_linear() {
        let long = format!("{}Ei", "9".repeat(200_000));
        assert_eq!(q(&long), q("9223372036854775807"));
        let long = format!("0.{}1", "0".repeat(200_000));
        assert_eq!(q(&long), q("1n"));
    }
}
