"""Maintainer scripts for the bundled sparse autoencoder (see resources/saes/)."""
