"""The device<->cloud protocol: formats both sides speak, imported by actors/, cloud/ and store/."""
