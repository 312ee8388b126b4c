# Build targets for `sam build` (template.yml uses BuildMethod: makefile).
# Each function binary is built for Lambda's provided.al2023 (glibc 2.34) with
# cargo-zigbuild (scripts/setup-python.sh installs it and zig into .venv; the
# Rust targets come from scripts/setup-rust.sh) and copied as `bootstrap`; the
# layer target lays out extensions/lambda-xray-extension (a static musl build,
# for provided.al2 and provided.al2023).
#
# The architecture follows the template's `Architecture` parameter
# (`sam build --parameter-overrides Architecture=arm64`): sam build passes make
# only ARTIFACTS_DIR, so scripts/sam-architecture.sh reads what sam resolved
# for the resource. Run by hand (no sam build), ARCHITECTURE=x86_64|arm64 says.
# Run `sam build --build-in-source` so cargo builds in this repository.

ROOT := $(abspath $(dir $(lastword $(MAKEFILE_LIST))))
TARGET_DIR := $(or $(CARGO_TARGET_DIR),$(ROOT)/target)
CARGO := PATH="$(ROOT)/.venv/bin:$$PATH" cargo
# The architecture of the target being made: build-<LogicalId>.
ARCH = arch=$$($(ROOT)/scripts/sam-architecture.sh $(@:build-%=%))

# $(1): the package, $(2): its binary (the package's name if not given). The Rust target is <cpu>-unknown-linux-gnu, linked against glibc 2.34.
define function
	$(ARCH) && cpu=$$([ "$$arch" = arm64 ] && echo aarch64 || echo x86_64) && \
	echo "$@: $(1) for $$arch" && \
	$(CARGO) zigbuild --release --locked --manifest-path $(ROOT)/Cargo.toml -p $(1) --bin $(or $(2),$(1)) --target $$cpu-unknown-linux-gnu.2.34 && \
	cp $(TARGET_DIR)/$$cpu-unknown-linux-gnu/release/$(or $(2),$(1)) $(ARTIFACTS_DIR)/bootstrap
endef

build-BasicFunction:
	$(call function,sample-basic)

build-InstrumentedFunction:
	$(call function,sample-instrumented)

build-SqsSenderFunction:
	$(call function,sample-sqs-sender)

build-SqsConsumerFunction:
	$(call function,sample-sqs-consumer)

build-HttpFunction:
	$(call function,sample-http)

build-HttpStreamFunction:
	$(call function,sample-http,sample-http-stream)

build-XRayExtensionLayer:
	$(ARCH) && \
	$(CARGO) run --quiet --release --locked --manifest-path $(ROOT)/Cargo.toml -p layer-build -- --arch $$arch --dir $(ARTIFACTS_DIR)

.PHONY: build-BasicFunction build-InstrumentedFunction build-SqsSenderFunction build-SqsConsumerFunction build-HttpFunction build-HttpStreamFunction build-XRayExtensionLayer
