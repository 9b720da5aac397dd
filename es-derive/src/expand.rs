//! The code `#[derive(DomainEvent)]` generates.

use proc_macro2::TokenStream;
use quote::quote;
use syn::{Data, DeriveInput, Fields, LitStr};

use crate::attributes::EventAttributes;

/// The `impl ::es_core::DomainEvent` for `input`.
pub(crate) fn domain_event(input: &DeriveInput) -> syn::Result<TokenStream> {
    let ident = &input.ident;
    let (impl_generics, type_generics, where_clause) = input.generics.split_for_impl();
    let outer = EventAttributes::parse(&input.attrs)?;
    let default_version = outer.version.unwrap_or(1);
    let (names, versions) = match &input.data {
        Data::Struct(_) => {
            let name = outer
                .name
                .unwrap_or_else(|| LitStr::new(&ident.to_string(), ident.span()));
            (quote! { #name }, quote! { #default_version })
        }
        Data::Enum(data) => {
            if let Some(name) = outer.name {
                return Err(syn::Error::new(
                    name.span(),
                    "`name` on an enum would give every variant the same event type: put it on a variant",
                ));
            }
            if data.variants.is_empty() {
                return Err(syn::Error::new_spanned(
                    ident,
                    "an event enum needs at least one variant",
                ));
            }
            let mut name_arms = Vec::with_capacity(data.variants.len());
            let mut version_arms = Vec::with_capacity(data.variants.len());
            let mut seen = std::collections::HashMap::new();
            for variant in &data.variants {
                let attrs = EventAttributes::parse(&variant.attrs)?;
                let v = &variant.ident;
                let name = attrs.name.unwrap_or_else(|| LitStr::new(&v.to_string(), v.span()));
                if let Some(other) = seen.insert(name.value(), v.to_string()) {
                    return Err(syn::Error::new(
                        name.span(),
                        format!("event type {:?} is also the name of variant `{other}`", name.value()),
                    ));
                }
                let version = attrs.version.unwrap_or(default_version);
                let pattern = match &variant.fields {
                    Fields::Named(_) => quote! { Self::#v { .. } },
                    Fields::Unnamed(_) => quote! { Self::#v(..) },
                    Fields::Unit => quote! { Self::#v },
                };
                name_arms.push(quote! { #pattern => #name });
                version_arms.push(quote! { #pattern => #version });
            }
            (
                quote! { match self { #(#name_arms,)* } },
                quote! { match self { #(#version_arms,)* } },
            )
        }
        Data::Union(u) => {
            return Err(syn::Error::new(
                u.union_token.span,
                "DomainEvent cannot be derived for a union: use an enum or a struct",
            ))
        }
    };
    Ok(quote! {
        #[automatically_derived]
        impl #impl_generics ::es_core::DomainEvent for #ident #type_generics #where_clause {
            fn event_type(&self) -> &'static str {
                #names
            }

            fn schema_version(&self) -> u32 {
                #versions
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use syn::parse_quote;

    use super::domain_event;

    fn error_of(input: syn::DeriveInput) -> String {
        match domain_event(&input) {
            Ok(tokens) => panic!("expected an error, got {tokens}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn variants_are_named_after_themselves_unless_renamed() {
        let tokens = domain_event(&parse_quote! {
            #[event(version = 3)]
            enum E { A { x: u8 }, #[event(name = "Bee", version = 1)] B(u8), C }
        })
        .map_or_else(|e| panic!("{e}"), |t| t.to_string());
        for expected in [
            "Self :: A { .. } => \"A\"",
            "Self :: B (..) => \"Bee\"",
            "Self :: C => \"C\"",
            "Self :: A { .. } => 3u32",
            "Self :: B (..) => 1u32",
            "Self :: C => 3u32",
        ] {
            assert!(tokens.contains(expected), "{expected} not in {tokens}");
        }
    }

    #[test]
    fn a_struct_is_named_after_its_type() {
        let tokens =
            domain_event(&parse_quote! { struct Opened { x: u8 } }).map_or_else(|e| panic!("{e}"), |t| t.to_string());
        assert!(tokens.contains("\"Opened\""), "{tokens}");
        assert!(tokens.contains("1u32"), "{tokens}");
    }

    #[test]
    fn mistakes_are_compile_errors_that_say_why() {
        assert!(error_of(parse_quote! { union U { a: u8 } }).contains("union"));
        assert!(error_of(parse_quote! { enum E {} }).contains("at least one variant"));
        assert!(error_of(parse_quote! { #[event(name = "X")] enum E { A } }).contains("put it on a variant"));
        assert!(error_of(parse_quote! { enum E { #[event(name = "B")] A, B } }).contains("also the name"));
        assert!(error_of(parse_quote! { enum E { #[event(colour = "red")] A } }).contains("unknown"));
        assert!(error_of(parse_quote! { enum E { #[event(version = 0)] A } }).contains("start at 1"));
        assert!(error_of(parse_quote! { enum E { #[event(name = "")] A } }).contains("empty"));
        assert!(error_of(parse_quote! { enum E { #[event(name = "A", name = "B")] A } }).contains("twice"));
    }
}
