//! The `#[event(...)]` attribute: `name = "..."` and `version = N`.

use syn::{Attribute, LitInt, LitStr};

/// What one item's `#[event(...)]` attributes say.
#[derive(Default)]
pub(crate) struct EventAttributes {
    /// The stored event type, when it is not the item's name.
    pub(crate) name: Option<LitStr>,
    /// The schema version written.
    pub(crate) version: Option<u32>,
}

impl EventAttributes {
    /// Reads every `#[event(...)]` of `attrs`; other attributes are not ours.
    pub(crate) fn parse(attrs: &[Attribute]) -> syn::Result<Self> {
        let mut out = Self::default();
        for attr in attrs.iter().filter(|a| a.path().is_ident("event")) {
            attr.parse_nested_meta(|meta| {
                if meta.path.is_ident("name") {
                    let name: LitStr = meta.value()?.parse()?;
                    if name.value().trim().is_empty() {
                        return Err(syn::Error::new(name.span(), "an event name cannot be empty"));
                    }
                    set_once(&mut out.name, name, &meta)
                } else if meta.path.is_ident("version") {
                    let lit: LitInt = meta.value()?.parse()?;
                    let version: u32 = lit.base10_parse()?;
                    if version == 0 {
                        return Err(syn::Error::new(lit.span(), "schema versions start at 1"));
                    }
                    set_once(&mut out.version, version, &meta)
                } else {
                    Err(meta.error("unknown `event` attribute: expected `name = \"...\"` or `version = N`"))
                }
            })?;
        }
        Ok(out)
    }
}

fn set_once<T>(slot: &mut Option<T>, value: T, meta: &syn::meta::ParseNestedMeta<'_>) -> syn::Result<()> {
    if slot.is_some() {
        return Err(meta.error("given twice"));
    }
    *slot = Some(value);
    Ok(())
}
