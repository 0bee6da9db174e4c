CREATE TABLE organisations (
	id VARCHAR(64) NOT NULL, 
	kind VARCHAR(32) NOT NULL, 
	name VARCHAR(200) NOT NULL, 
	name_en VARCHAR(200) NOT NULL, 
	district VARCHAR(64) NOT NULL, 
	parent_id VARCHAR(64), 
	PRIMARY KEY (id), 
	FOREIGN KEY(parent_id) REFERENCES organisations (id)
);
CREATE INDEX ix_organisations_kind ON organisations (kind);
CREATE TABLE gateway_seq (
	community_id VARCHAR(64) NOT NULL, 
	gateway_id VARCHAR(64) NOT NULL, 
	high BIGINT NOT NULL, 
	gaps BIGINT NOT NULL, 
	duplicates BIGINT NOT NULL, 
	PRIMARY KEY (community_id, gateway_id)
);
CREATE TABLE gateway_configs (
	community_id VARCHAR(64) NOT NULL, 
	gateway_id VARCHAR(64) NOT NULL, 
	version INTEGER NOT NULL, 
	body TEXT NOT NULL, 
	published_t BIGINT NOT NULL, 
	ack_t BIGINT, 
	ack_ok BOOLEAN, 
	ack_running INTEGER, 
	ack_message TEXT NOT NULL, 
	PRIMARY KEY (community_id, gateway_id, version)
);
CREATE TABLE gateway_commands (
	id VARCHAR(64) NOT NULL, 
	community_id VARCHAR(64) NOT NULL, 
	gateway_id VARCHAR(64) NOT NULL, 
	op VARCHAR(32) NOT NULL, 
	device VARCHAR(64), 
	sent_t BIGINT NOT NULL, 
	expires_t BIGINT NOT NULL, 
	ack_t BIGINT, 
	ack_ok BOOLEAN, 
	ack_message TEXT NOT NULL, 
	PRIMARY KEY (id)
);
CREATE INDEX ix_gateway_commands_sent_t ON gateway_commands (sent_t);
CREATE INDEX ix_gateway_commands_community_id ON gateway_commands (community_id);
CREATE TABLE alerts (
	id INTEGER NOT NULL, 
	rule VARCHAR(32) NOT NULL, 
	community_id VARCHAR(64) NOT NULL, 
	device VARCHAR(64) NOT NULL, 
	severity VARCHAR(16) NOT NULL, 
	state VARCHAR(16) NOT NULL, 
	opened_t BIGINT NOT NULL, 
	updated_t BIGINT NOT NULL, 
	repeats INTEGER NOT NULL, 
	ended_t BIGINT, 
	level INTEGER NOT NULL, 
	detail TEXT NOT NULL, 
	running_key VARCHAR(200), 
	PRIMARY KEY (id), 
	UNIQUE (running_key)
);
CREATE INDEX ix_alerts_opened_t ON alerts (opened_t);
CREATE INDEX ix_alerts_community_id ON alerts (community_id);
CREATE INDEX ix_alerts_state ON alerts (state);
CREATE INDEX ix_alerts_rule ON alerts (rule);
CREATE TABLE alert_timers (
	id INTEGER NOT NULL, 
	"key" VARCHAR(250) NOT NULL, 
	due_t BIGINT NOT NULL, 
	payload TEXT NOT NULL, 
	PRIMARY KEY (id), 
	UNIQUE ("key")
);
CREATE INDEX ix_alert_timers_due_t ON alert_timers (due_t);
CREATE TABLE org_channels (
	id INTEGER NOT NULL, 
	org_id VARCHAR(64) NOT NULL, 
	kind VARCHAR(16) NOT NULL, 
	target TEXT NOT NULL, 
	secret TEXT NOT NULL, 
	enabled BOOLEAN NOT NULL, 
	PRIMARY KEY (id)
);
CREATE INDEX ix_org_channels_org_id ON org_channels (org_id);
CREATE TABLE maintenance_records (
	id INTEGER NOT NULL, 
	community_id VARCHAR(64) NOT NULL, 
	device VARCHAR(64) NOT NULL, 
	day DATE NOT NULL, 
	org_id VARCHAR(64) NOT NULL, 
	note TEXT NOT NULL, 
	created_t BIGINT NOT NULL, 
	PRIMARY KEY (id)
);
CREATE INDEX ix_maintenance_records_community_id ON maintenance_records (community_id);
CREATE TABLE inspections (
	community_id VARCHAR(64) NOT NULL, 
	device VARCHAR(64) NOT NULL, 
	next_date DATE NOT NULL, 
	PRIMARY KEY (community_id, device)
);
CREATE TABLE device_seen (
	community_id VARCHAR(64) NOT NULL, 
	device VARCHAR(64) NOT NULL, 
	last_t BIGINT NOT NULL, 
	PRIMARY KEY (community_id, device)
);
CREATE TABLE broker_users (
	username VARCHAR(200) NOT NULL, 
	role VARCHAR(16) NOT NULL, 
	community_id VARCHAR(64), 
	gateway_id VARCHAR(64), 
	org_id VARCHAR(64), 
	password_hash VARCHAR(300) NOT NULL, 
	created_t BIGINT NOT NULL, 
	PRIMARY KEY (username)
);
CREATE TABLE audit_log (
	id INTEGER NOT NULL, 
	t BIGINT NOT NULL, 
	actor VARCHAR(200) NOT NULL, 
	address VARCHAR(100) NOT NULL, 
	action VARCHAR(64) NOT NULL, 
	target VARCHAR(300) NOT NULL, 
	detail TEXT NOT NULL, 
	PRIMARY KEY (id)
);
CREATE INDEX ix_audit_log_actor ON audit_log (actor);
CREATE INDEX ix_audit_log_t ON audit_log (t);
CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TABLE communities (
	id VARCHAR(64) NOT NULL, 
	name VARCHAR(200) NOT NULL, 
	name_en VARCHAR(200) NOT NULL, 
	committee_id VARCHAR(64) NOT NULL, 
	street_office_id VARCHAR(64) NOT NULL, 
	district VARCHAR(64) NOT NULL, 
	condition_class INTEGER, 
	arrival_deadline_min INTEGER NOT NULL, 
	PRIMARY KEY (id), 
	FOREIGN KEY(committee_id) REFERENCES organisations (id), 
	FOREIGN KEY(street_office_id) REFERENCES organisations (id)
);
CREATE TABLE alert_transitions (
	id INTEGER NOT NULL, 
	alert_id INTEGER NOT NULL, 
	t BIGINT NOT NULL, 
	to_state VARCHAR(16) NOT NULL, 
	"by" VARCHAR(64) NOT NULL, 
	note TEXT NOT NULL, 
	evidence TEXT NOT NULL, 
	PRIMARY KEY (id), 
	FOREIGN KEY(alert_id) REFERENCES alerts (id)
);
CREATE INDEX ix_alert_transitions_alert_id ON alert_transitions (alert_id);
CREATE TABLE alert_recipients (
	alert_id INTEGER NOT NULL, 
	org_id VARCHAR(64) NOT NULL, 
	role VARCHAR(32) NOT NULL, 
	read_only BOOLEAN NOT NULL, 
	standing_in BOOLEAN NOT NULL, 
	step VARCHAR(32) NOT NULL, 
	added_t BIGINT NOT NULL, 
	PRIMARY KEY (alert_id, org_id), 
	FOREIGN KEY(alert_id) REFERENCES alerts (id)
);
CREATE INDEX ix_alert_recipients_org_id ON alert_recipients (org_id);
CREATE TABLE deliveries (
	id INTEGER NOT NULL, 
	alert_id INTEGER NOT NULL, 
	org_id VARCHAR(64) NOT NULL, 
	channel_id INTEGER NOT NULL, 
	body TEXT NOT NULL, 
	status VARCHAR(16) NOT NULL, 
	attempts INTEGER NOT NULL, 
	created_t BIGINT NOT NULL, 
	next_t BIGINT NOT NULL, 
	claimed_until BIGINT NOT NULL, 
	delivered_t BIGINT, 
	last_error TEXT NOT NULL, 
	PRIMARY KEY (id), 
	FOREIGN KEY(alert_id) REFERENCES alerts (id), 
	FOREIGN KEY(channel_id) REFERENCES org_channels (id)
);
CREATE INDEX ix_deliveries_next_t ON deliveries (next_t);
CREATE INDEX ix_deliveries_org_id ON deliveries (org_id);
CREATE INDEX ix_deliveries_alert_id ON deliveries (alert_id);
CREATE INDEX ix_deliveries_status ON deliveries (status);
CREATE TABLE accident_records (
	id INTEGER NOT NULL, 
	alert_id INTEGER NOT NULL, 
	created_t BIGINT NOT NULL, 
	to_org VARCHAR(64) NOT NULL, 
	body TEXT NOT NULL, 
	PRIMARY KEY (id), 
	UNIQUE (alert_id), 
	FOREIGN KEY(alert_id) REFERENCES alerts (id)
);
CREATE TABLE api_tokens (
	sha256 VARCHAR(64) NOT NULL, 
	org_id VARCHAR(64) NOT NULL, 
	label VARCHAR(200) NOT NULL, 
	created_t BIGINT NOT NULL, 
	PRIMARY KEY (sha256), 
	FOREIGN KEY(org_id) REFERENCES organisations (id)
);
CREATE INDEX ix_api_tokens_org_id ON api_tokens (org_id);
CREATE TABLE gateways (
	community_id VARCHAR(64) NOT NULL, 
	id VARCHAR(64) NOT NULL, 
	name VARCHAR(200) NOT NULL, 
	PRIMARY KEY (community_id, id), 
	FOREIGN KEY(community_id) REFERENCES communities (id)
);
CREATE TABLE devices (
	community_id VARCHAR(64) NOT NULL, 
	id VARCHAR(64) NOT NULL, 
	kind VARCHAR(32) NOT NULL, 
	name VARCHAR(200) NOT NULL, 
	name_en VARCHAR(200) NOT NULL, 
	gateway_id VARCHAR(64) NOT NULL, 
	building VARCHAR(64) NOT NULL, 
	floors INTEGER, 
	maintenance_unit_id VARCHAR(64), 
	registration_code VARCHAR(32), 
	use_registration_no VARCHAR(64), 
	rescue_code VARCHAR(32), 
	PRIMARY KEY (community_id, id), 
	FOREIGN KEY(community_id) REFERENCES communities (id), 
	FOREIGN KEY(maintenance_unit_id) REFERENCES organisations (id)
);
CREATE TABLE contracts (
	id INTEGER NOT NULL, 
	community_id VARCHAR(64) NOT NULL, 
	company_id VARCHAR(64) NOT NULL, 
	start DATE NOT NULL, 
	"end" DATE, 
	PRIMARY KEY (id), 
	UNIQUE (community_id, company_id, start), 
	FOREIGN KEY(community_id) REFERENCES communities (id), 
	FOREIGN KEY(company_id) REFERENCES organisations (id)
);
CREATE INDEX ix_contracts_community_id ON contracts (community_id);
CREATE TABLE centre_communities (
	centre_id VARCHAR(64) NOT NULL, 
	community_id VARCHAR(64) NOT NULL, 
	PRIMARY KEY (centre_id, community_id), 
	FOREIGN KEY(centre_id) REFERENCES organisations (id), 
	FOREIGN KEY(community_id) REFERENCES communities (id)
);
CREATE TABLE delivery_attempts (
	id INTEGER NOT NULL, 
	delivery_id INTEGER NOT NULL, 
	t BIGINT NOT NULL, 
	ok BOOLEAN NOT NULL, 
	status INTEGER, 
	error TEXT NOT NULL, 
	duration_ms INTEGER NOT NULL, 
	PRIMARY KEY (id), 
	FOREIGN KEY(delivery_id) REFERENCES deliveries (id)
);
CREATE INDEX ix_delivery_attempts_delivery_id ON delivery_attempts (delivery_id);
