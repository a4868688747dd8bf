//! The expansion the macro's documentation shows is the real one: this expands the
//! documented function and compares the result, pretty-printed as `cargo expand`
//! prints it, with the text of the documentation.

/// The documentation of `#[retriable_tx]`.
const DOC: &str = include_str!("../docs/retriable_tx.md");

/// The code blocks of a markdown text, without the lines rustdoc hides (`# …`).
fn code_blocks(markdown: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in markdown.lines() {
        if line.starts_with("```") {
            match current.take() {
                Some(block) => blocks.push(block),
                None => current = Some(String::new()),
            }
            continue;
        }
        if let Some(block) = &mut current {
            if line == "#" || line.starts_with("# ") {
                continue;
            }
            block.push_str(line);
            block.push('\n');
        }
    }
    blocks
}

/// The function in `source` that carries `#[retriable_tx(...)]`, split into the
/// attribute's arguments and the function without it.
fn annotated_fn(source: &str) -> (proc_macro2::TokenStream, proc_macro2::TokenStream) {
    let file: syn::File = syn::parse_str(source).expect("the documented example parses");
    let mut func = file
        .items
        .into_iter()
        .find_map(|item| match item {
            syn::Item::Fn(func) => Some(func),
            _ => None,
        })
        .expect("the documented example has a function");
    let index = func
        .attrs
        .iter()
        .position(|attr| attr.path().is_ident("retriable_tx"))
        .expect("the function carries #[retriable_tx]");
    let attr = func.attrs.remove(index);
    let args = match attr.meta {
        syn::Meta::List(list) => list.tokens,
        _ => proc_macro2::TokenStream::new(),
    };
    (args, quote_fn(&func))
}

fn quote_fn(func: &syn::ItemFn) -> proc_macro2::TokenStream {
    let mut tokens = proc_macro2::TokenStream::new();
    quote::ToTokens::to_tokens(func, &mut tokens);
    tokens
}

#[test]
fn the_documented_expansion_is_the_real_one() {
    let blocks = code_blocks(DOC);
    let [example, expansion] = blocks.as_slice() else {
        panic!("the documentation has two code blocks, the example and its expansion: {blocks:#?}");
    };
    let (args, func) = annotated_fn(example);
    let expanded = resilient_tx_macros_core::retriable_tx(args, func);
    let file: syn::File = syn::parse2(expanded).expect("the expansion is valid Rust");
    let real = prettyplease::unparse(&file);
    assert!(
        *expansion == real,
        "docs/retriable_tx.md shows an expansion that is not the macro's; the real one is:\n{real}"
    );
}
