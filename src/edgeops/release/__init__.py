"""Release: sign, register (local folder or S3) and publish releases over MQTT."""
