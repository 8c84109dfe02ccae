"""The Flink side: environment, table DDL, UDFs and the workflow. The only package importing pyflink."""
