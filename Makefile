# Build targets for `sam build` (template.yml uses BuildMethod: makefile).
# Each function binary is built for Lambda's provided.al2023 (glibc 2.34) with
# cargo-zigbuild (scripts/setup-python.sh installs it and zig into .venv) and
# copied as `bootstrap`; the layer target lays out extensions/lambda-xray-extension.
# Run `sam build --build-in-source` so cargo builds in this repository.

ROOT := $(abspath $(dir $(lastword $(MAKEFILE_LIST))))
TARGET := x86_64-unknown-linux-gnu
RELEASE := $(or $(CARGO_TARGET_DIR),$(ROOT)/target)/$(TARGET)/release
ZIGBUILD := PATH="$(ROOT)/.venv/bin:$$PATH" cargo zigbuild --release --locked --manifest-path $(ROOT)/Cargo.toml --target $(TARGET).2.34

define function
	$(ZIGBUILD) -p $(1)
	cp $(RELEASE)/$(1) $(ARTIFACTS_DIR)/bootstrap
endef

build-BasicFunction:
	$(call function,sample-basic)

build-InstrumentedFunction:
	$(call function,sample-instrumented)

build-SqsSenderFunction:
	$(call function,sample-sqs-sender)

build-SqsConsumerFunction:
	$(call function,sample-sqs-consumer)

build-XRayExtensionLayer:
	cargo run --quiet --release --locked --manifest-path $(ROOT)/Cargo.toml -p layer-build -- --dir $(ARTIFACTS_DIR)

.PHONY: build-BasicFunction build-InstrumentedFunction build-SqsSenderFunction build-SqsConsumerFunction build-XRayExtensionLayer
