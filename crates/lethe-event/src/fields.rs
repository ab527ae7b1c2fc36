//! The optional standard event fields, as tables rather than struct fields, so that parsing,
//! storage columns and export all iterate one list instead of repeating twenty names.

/// A standard text field: its name on the ingestion wire and its name in Amplitude's export.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StrField {
    /// Name in `/2/httpapi` bodies.
    pub wire: &'static str,
    /// Name in `/api/2/export` lines (Amplitude renames a few, e.g. `ip` → `ip_address`).
    pub export: &'static str,
}

/// A standard numeric field (same name on the wire and in the export).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NumField {
    /// Name on the wire and in the export.
    pub name: &'static str,
    /// Amplitude documents the field as an integer (`quantity`): a whole value is exported
    /// as an integer, as it was sent, not as `5.0`.
    pub integer: bool,
}

const fn s(wire: &'static str, export: &'static str) -> StrField {
    StrField { wire, export }
}

impl StrField {
    /// Every standard text field, in storage column order.
    pub const ALL: &'static [StrField] = &[
        s("app_version", "version_name"),
        s("platform", "platform"),
        s("os_name", "os_name"),
        s("os_version", "os_version"),
        s("device_brand", "device_brand"),
        s("device_manufacturer", "device_manufacturer"),
        s("device_model", "device_model"),
        s("carrier", "device_carrier"),
        s("country", "country"),
        s("region", "region"),
        s("city", "city"),
        s("dma", "dma"),
        s("language", "language"),
        s("library", "library"),
        s("ip", "ip_address"),
        s("idfa", "idfa"),
        s("idfv", "idfv"),
        s("adid", "adid"),
        s("android_id", "android_id"),
        s("productId", "productId"),
        s("revenueType", "revenueType"),
        s("currency", "currency"),
        s("start_version", "start_version"),
        s("user_agent", "user_agent"),
        s("partner_id", "partner_id"),
        s("device_type", "device_type"),
        s("device_family", "device_family"),
    ];

    /// The position of the field sent as `wire`.
    pub fn index(wire: &str) -> Option<u8> {
        Self::ALL
            .iter()
            .position(|f| f.wire == wire)
            .map(|i| i as u8)
    }
}

impl NumField {
    /// Every standard numeric field, in storage column order.
    pub const ALL: &'static [NumField] = &[
        NumField::real("location_lat"),
        NumField::real("location_lng"),
        NumField::real("price"),
        NumField {
            name: "quantity",
            integer: true,
        },
        NumField::real("revenue"),
    ];

    const fn real(name: &'static str) -> NumField {
        NumField {
            name,
            integer: false,
        }
    }

    /// The field's value as the export renders it.
    pub fn render(&self, value: f64) -> serde_json::Value {
        if self.integer && value.fract() == 0.0 && value.abs() < 9.0e15 {
            serde_json::Value::from(value as i64)
        } else {
            serde_json::Value::from(value)
        }
    }
}
