-- The bakery estate's twelve service databases (compose only).
CREATE DATABASE bakery_orders;
CREATE DATABASE bakery_inventory;
CREATE DATABASE bakery_recipes;
CREATE DATABASE bakery_sales;
CREATE DATABASE bakery_production;
CREATE DATABASE bakery_suppliers;
CREATE DATABASE bakery_pos;
CREATE DATABASE bakery_external;
CREATE DATABASE bakery_forecasting;
CREATE DATABASE bakery_training;
CREATE DATABASE bakery_alerts;
CREATE DATABASE bakery_notifications;
