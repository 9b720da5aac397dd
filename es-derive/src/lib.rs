#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod attributes;
mod expand;

use proc_macro::TokenStream;

/// Implements `es_core::DomainEvent`: `event_type` is the variant's (or
/// struct's) name unless `#[event(name = "...")]` says otherwise, and
/// `schema_version` is `#[event(version = N)]` (default 1). See the crate
/// documentation for an example.
#[proc_macro_derive(DomainEvent, attributes(event))]
pub fn derive_domain_event(input: TokenStream) -> TokenStream {
    let input = syn::parse_macro_input!(input as syn::DeriveInput);
    expand::domain_event(&input)
        .unwrap_or_else(syn::Error::into_compile_error)
        .into()
}
