//! Invoices as values: validated amounts and currencies, and the open → paid lifecycle.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize, Serializer};
use uuid::Uuid;

use crate::currencies;

/// Why an invoice's fields are not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidInvoice {
    /// The amount is zero or negative.
    #[error("amount_cents must be a positive integer")]
    Amount,
    /// The currency is not an active, upper-case ISO 4217 code.
    #[error("currency must be an active ISO 4217 code in upper case, e.g. \"EUR\"")]
    Currency,
}

/// A positive amount in the currency's minor unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AmountCents(i64);

impl AmountCents {
    /// Accepts amounts above zero.
    ///
    /// # Errors
    /// [`InvalidInvoice::Amount`] otherwise.
    pub fn parse(raw: i64) -> Result<Self, InvalidInvoice> {
        if raw > 0 {
            Ok(Self(raw))
        } else {
            Err(InvalidInvoice::Amount)
        }
    }

    /// The amount.
    pub fn get(self) -> i64 {
        self.0
    }
}

/// An active ISO 4217 currency code, e.g. `EUR`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Currency(&'static str);

impl Currency {
    /// Accepts an upper-case code on the active ISO 4217 list.
    ///
    /// # Errors
    /// [`InvalidInvoice::Currency`] otherwise (lower case included: codes are exact).
    pub fn parse(raw: &str) -> Result<Self, InvalidInvoice> {
        currencies::ACTIVE
            .binary_search(&raw)
            .map(|i| Self(currencies::ACTIVE[i]))
            .map_err(|_| InvalidInvoice::Currency)
    }

    /// The code.
    pub fn as_str(self) -> &'static str {
        self.0
    }
}

/// Where an invoice stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum InvoiceStatus {
    /// Issued, awaiting payment.
    Open,
    /// Paid; final.
    Paid,
    /// Open for longer than `[billing] overdue_after`; can still be paid.
    Overdue,
}

impl InvoiceStatus {
    /// The stored text.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::Paid => "paid",
            Self::Overdue => "overdue",
        }
    }

    /// Reads the stored text back.
    pub fn from_stored(text: &str) -> Option<Self> {
        match text {
            "open" => Some(Self::Open),
            "paid" => Some(Self::Paid),
            "overdue" => Some(Self::Overdue),
            _ => None,
        }
    }
}

/// The body of `POST /invoices`.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IssueInvoiceRequest {
    /// The record billed; must exist.
    pub record_id: Uuid,
    /// The amount in the currency's minor unit, above zero.
    #[schema(minimum = 1, example = 1999)]
    pub amount_cents: i64,
    /// An active ISO 4217 code in upper case.
    #[schema(example = "EUR")]
    pub currency: String,
}

/// An invoice that passed validation (the record's existence is checked separately).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NewInvoice {
    /// The record billed.
    pub record_id: Uuid,
    /// The amount.
    pub amount: AmountCents,
    /// The currency.
    pub currency: Currency,
}

impl NewInvoice {
    /// Validates the amount, then the currency.
    ///
    /// # Errors
    /// The first [`InvalidInvoice`] found.
    pub fn parse(request: &IssueInvoiceRequest) -> Result<Self, InvalidInvoice> {
        Ok(Self {
            record_id: request.record_id,
            amount: AmountCents::parse(request.amount_cents)?,
            currency: Currency::parse(&request.currency)?,
        })
    }
}

/// A stored invoice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invoice {
    /// UUIDv7.
    pub id: Uuid,
    /// The record billed.
    pub record_id: Uuid,
    /// The amount in minor units.
    pub amount_cents: i64,
    /// ISO 4217 code.
    pub currency: String,
    /// Where it stands.
    pub status: InvoiceStatus,
    /// When it was issued.
    pub created_at: DateTime<Utc>,
    /// When it was paid, once it was.
    pub paid_at: Option<DateTime<Utc>>,
}

/// The JSON shape of an invoice in responses.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = Invoice)]
pub struct InvoiceView {
    /// The invoice's id (UUIDv7).
    id: Uuid,
    /// The record billed.
    record_id: Uuid,
    /// The amount in the currency's minor unit.
    amount_cents: i64,
    /// ISO 4217 code.
    currency: String,
    /// Where it stands.
    status: InvoiceStatus,
    /// When it was issued (RFC 3339, UTC, milliseconds).
    #[serde(serialize_with = "rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    created_at: DateTime<Utc>,
    /// When it was paid; `null` while open.
    #[serde(serialize_with = "rfc3339_opt")]
    #[schema(value_type = Option<String>, format = DateTime)]
    paid_at: Option<DateTime<Utc>>,
}

impl From<Invoice> for InvoiceView {
    fn from(invoice: Invoice) -> Self {
        Self {
            id: invoice.id,
            record_id: invoice.record_id,
            amount_cents: invoice.amount_cents,
            currency: invoice.currency,
            status: invoice.status,
            created_at: invoice.created_at,
            paid_at: invoice.paid_at,
        }
    }
}

fn rfc3339<S: Serializer>(at: &DateTime<Utc>, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&at.to_rfc3339_opts(SecondsFormat::Millis, true))
}

fn rfc3339_opt<S: Serializer>(
    at: &Option<DateTime<Utc>>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match at {
        Some(at) => rfc3339(at, serializer),
        None => serializer.serialize_none(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn amounts_must_be_positive() {
        assert_eq!(AmountCents::parse(1).unwrap().get(), 1);
        assert_eq!(AmountCents::parse(i64::MAX).unwrap().get(), i64::MAX);
        assert_eq!(AmountCents::parse(0), Err(InvalidInvoice::Amount));
        assert_eq!(AmountCents::parse(-5), Err(InvalidInvoice::Amount));
    }

    #[test]
    fn currencies_must_be_active_upper_case_codes() {
        assert_eq!(Currency::parse("EUR").unwrap().as_str(), "EUR");
        for bad in ["eur", "Eur", "EURO", "", " EUR", "DEM", "ZZZ"] {
            assert_eq!(
                Currency::parse(bad),
                Err(InvalidInvoice::Currency),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn the_amount_is_checked_before_the_currency() {
        let request = IssueInvoiceRequest {
            record_id: Uuid::now_v7(),
            amount_cents: 0,
            currency: "nope".to_owned(),
        };
        assert_eq!(NewInvoice::parse(&request), Err(InvalidInvoice::Amount));
    }

    #[test]
    fn an_invoice_renders_with_rfc3339_times_and_a_null_paid_at() {
        let invoice = Invoice {
            id: Uuid::nil(),
            record_id: Uuid::nil(),
            amount_cents: 1250,
            currency: "EUR".to_owned(),
            status: InvoiceStatus::Open,
            created_at: DateTime::from_timestamp_millis(1_700_000_000_123).unwrap(),
            paid_at: None,
        };
        let json = serde_json::to_value(InvoiceView::from(invoice)).unwrap();
        assert_eq!(json["created_at"], "2023-11-14T22:13:20.123Z");
        assert_eq!(json["paid_at"], serde_json::Value::Null);
        assert_eq!(json["status"], "open");
    }

    #[test]
    fn status_round_trips_through_storage() {
        for status in [
            InvoiceStatus::Open,
            InvoiceStatus::Paid,
            InvoiceStatus::Overdue,
        ] {
            assert_eq!(InvoiceStatus::from_stored(status.as_str()), Some(status));
        }
        assert_eq!(InvoiceStatus::from_stored("void"), None);
    }
}
