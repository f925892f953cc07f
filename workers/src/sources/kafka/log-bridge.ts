/** Routes kafkajs's log lines into a pino logger. */
import { logLevel as kafkaLogLevel } from 'kafkajs';
import type { LogEntry, logCreator } from 'kafkajs';
import type { Logger } from '../../logging.js';

export function pinoLogCreator(logger: Logger): logCreator {
  return () =>
    ({ namespace, level, log }: LogEntry) => {
      const { message, ...extra } = log;
      const fields = { kafkajs: namespace, ...extra };
      if (level === kafkaLogLevel.ERROR) logger.error(fields, message);
      else if (level === kafkaLogLevel.WARN) logger.warn(fields, message);
      else if (level === kafkaLogLevel.INFO) logger.info(fields, message);
      else logger.debug(fields, message);
    };
}
