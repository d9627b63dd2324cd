import { z } from 'zod';

/** Where an issued database login is told to connect (defaults: from the issuer's adminUrl). */
export const publicEndpointFields = {
  publicHost: z.string().optional(),
  publicPort: z.number().int().optional(),
  database: z.string().optional(),
};
