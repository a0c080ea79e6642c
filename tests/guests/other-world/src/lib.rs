//! A component of another world entirely: `host` must refuse it.
wit_bindgen::generate!({
    inline: "package test:other; world other { export hello: func() -> string; }",
    world: "other",
});

struct Component;

impl Guest for Component {
    fn hello() -> String {
        "hello".into()
    }
}

export!(Component);
