//! The ISO 4217 alphabetic codes billing accepts: the current "list one" (active codes,
//! including funds, precious metals and the special X-codes), kept sorted for binary search.
//!
//! Update it when ISO's maintenance agency publishes an amendment; a test checks the order.

/// Active ISO 4217 alphabetic codes, sorted.
pub const ACTIVE: &[&str] = &[
    "AED", "AFN", "ALL", "AMD", "ANG", "AOA", "ARS", "AUD", "AWG", "AZN", "BAM", "BBD", "BDT",
    "BGN", "BHD", "BIF", "BMD", "BND", "BOB", "BOV", "BRL", "BSD", "BTN", "BWP", "BYN", "BZD",
    "CAD", "CDF", "CHE", "CHF", "CHW", "CLF", "CLP", "CNY", "COP", "COU", "CRC", "CUP", "CVE",
    "CZK", "DJF", "DKK", "DOP", "DZD", "EGP", "ERN", "ETB", "EUR", "FJD", "FKP", "GBP", "GEL",
    "GHS", "GIP", "GMD", "GNF", "GTQ", "GYD", "HKD", "HNL", "HTG", "HUF", "IDR", "ILS", "INR",
    "IQD", "IRR", "ISK", "JMD", "JOD", "JPY", "KES", "KGS", "KHR", "KMF", "KPW", "KRW", "KWD",
    "KYD", "KZT", "LAK", "LBP", "LKR", "LRD", "LSL", "LYD", "MAD", "MDL", "MGA", "MKD", "MMK",
    "MNT", "MOP", "MRU", "MUR", "MVR", "MWK", "MXN", "MXV", "MYR", "MZN", "NAD", "NGN", "NIO",
    "NOK", "NPR", "NZD", "OMR", "PAB", "PEN", "PGK", "PHP", "PKR", "PLN", "PYG", "QAR", "RON",
    "RSD", "RUB", "RWF", "SAR", "SBD", "SCR", "SDG", "SEK", "SGD", "SHP", "SLE", "SOS", "SRD",
    "SSP", "STN", "SVC", "SYP", "SZL", "THB", "TJS", "TMT", "TND", "TOP", "TRY", "TTD", "TWD",
    "TZS", "UAH", "UGX", "USD", "USN", "UYI", "UYU", "UYW", "UZS", "VED", "VES", "VND", "VUV",
    "WST", "XAF", "XAG", "XAU", "XBA", "XBB", "XBC", "XBD", "XCD", "XCG", "XDR", "XOF", "XPD",
    "XPF", "XPT", "XSU", "XTS", "XUA", "XXX", "YER", "ZAR", "ZMW", "ZWG",
];

#[cfg(test)]
mod tests {
    use super::*;

    fn is_active(code: &str) -> bool {
        ACTIVE.binary_search(&code).is_ok()
    }

    #[test]
    fn the_list_is_sorted_unique_and_well_formed() {
        assert!(
            ACTIVE.windows(2).all(|w| w[0] < w[1]),
            "ACTIVE must stay sorted"
        );
        assert!(
            ACTIVE
                .iter()
                .all(|c| c.len() == 3 && c.bytes().all(|b| b.is_ascii_uppercase()))
        );
    }

    #[test]
    fn common_codes_are_active_and_withdrawn_ones_are_not() {
        for code in ["EUR", "USD", "GBP", "JPY", "CHF", "SEK", "XCG", "ZWG"] {
            assert!(is_active(code), "{code}");
        }
        for code in [
            "DEM", "FRF", "HRK", "VEF", "ZWL", "SLL", "ABC", "eur", "EU", "EURO",
        ] {
            assert!(!is_active(code), "{code}");
        }
    }
}
